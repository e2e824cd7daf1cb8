"""The leaderboard: deltas against production, gates, Rich table, self-contained HTML."""

from __future__ import annotations

import datetime as dt
import re
from typing import Any

import pytest
from rich.console import Console

from cartag.clock import FakeClock
from cartag.deploy.gates import gate_status
from cartag.errors import NotFoundError
from cartag.settings import Settings
from cartag.store.db import Database
from cartag.training.leaderboard import (
    Entry,
    Leaderboard,
    load_leaderboard,
    recall_deltas,
    render_html,
    rich_table,
    worst_delta,
    write_leaderboard,
)
from tests.support.sweep_data import examples, make_frozen_dataset

REF = "cars@3"
TEST = f"{REF}:test"
ADV = f"{REF}:test:advertiser=42"


def _task(recalls: dict[str, float], support: int = 40) -> dict[str, Any]:
    labels = list(recalls)
    return {
        "n": support * len(labels),
        "accuracy": sum(recalls.values()) / len(labels),
        "macro_recall": sum(recalls.values()) / len(labels),
        "labels": labels,
        "per_class": {
            k: {"precision": 0.9, "recall": v, "support": support} for k, v in recalls.items()
        },
        "confusion": [
            [support if i == j else 0 for j in range(len(labels))] for i in range(len(labels))
        ],
    }


def _metrics(stock_recall: float, red_recall: float) -> dict[str, Any]:
    return {
        TEST: {
            "image_type": _task({"Dealer": 0.95, "Stock": stock_recall}),
            "color": _task({"Red": red_recall, "Blue": 0.8}),
        },
        ADV: {"image_type": _task({"Dealer": 0.9, "Stock": stock_recall}, support=12)},
    }


def _board(settings: Settings) -> Leaderboard:
    production = Entry("production", "bundled-2026.11.26-3da82e0c", _metrics(0.9, 0.8))
    good_metrics, bad_metrics = _metrics(0.92, 0.85), _metrics(0.7, 0.8)
    candidates = []
    for n, (metrics, objective) in enumerate(((good_metrics, 0.91), (bad_metrics, 0.88))):
        passes, failures = gate_status(metrics, production.metrics, settings)
        candidates.append(
            Entry(
                f"trial {n}",
                f"sweep-2026.12.02-{n:010d}",
                metrics,
                trial=n,
                params={"head_type": "mlp", "backbone": "lite0", "l2": 0.1, "lr": 1e-3},
                objective=objective,
                passes=passes,
                failures=failures,
                is_candidate=n == 0,
            )
        )
    return Leaderboard(f"{REF}:sweep-abc", REF, [ADV, TEST], production, candidates)


def test_deltas_and_gates(settings: Settings) -> None:
    board = _board(settings)
    good, bad = board.candidates
    assert recall_deltas(good, board.production, TEST, "image_type") == {
        "Dealer": 0.0,
        "Stock": pytest.approx(0.02),
    }
    assert recall_deltas(board.production, board.production, TEST, "color") == {}  # type: ignore[arg-type]
    assert worst_delta(bad, board.production, TEST) == ("Stock", pytest.approx(-0.2))
    assert good.passes is True
    assert bad.passes is False
    assert f"{TEST} image_type recall of Stock drops 0.9 → 0.7 (> 0.02 tolerance)" in bad.failures
    assert any(f.startswith(ADV) for f in bad.failures)


def test_rich_table_lists_production_and_candidates(settings: Settings) -> None:
    console = Console(record=True, width=250)
    console.print(rich_table(_board(settings)))
    text = console.export_text()
    for needle in ("production", "trial 0 *", "trial 1", "pass", "FAIL (2)", "-0.200 Stock"):
        assert needle in text, needle
    assert "test:advertiser=42" in text and "0.910" in text


def test_html_report_is_self_contained(settings: Settings) -> None:
    board = _board(settings)
    html = render_html(board, now=dt.datetime(2026, 12, 2, tzinfo=dt.UTC))
    assert html.count("<svg") == 3  # type + color on the test set, type on the advertiser set
    assert html.count("data:image/png;base64,") == 3 + 3 + 3  # a confusion matrix per model/task
    assert "recall of Stock drops" in html and "sweep-2026.12.02-0000000001" in html
    # Nothing is fetched from elsewhere.
    assert not re.search(r"""(src|href)=["']?https?:""", html)
    path = write_leaderboard(board, settings, now=dt.datetime(2026, 12, 2, tzinfo=dt.UTC))
    assert path == settings.data_dir / "reports" / "cars@3_sweep-abc.html"
    assert path.read_text(encoding="utf-8") == html


def test_leaderboard_without_a_sweep_says_how_to_run_one(
    sqlite_db: Database, settings: Settings
) -> None:
    ref = make_frozen_dataset(sqlite_db, settings, FakeClock(), examples()[:12])
    with pytest.raises(NotFoundError, match="no sweep has run on cars@1; run `cartag train"):
        load_leaderboard(sqlite_db, settings, ref)
    with pytest.raises(NotFoundError, match="no dataset"):
        load_leaderboard(sqlite_db, settings, "nope@1")
