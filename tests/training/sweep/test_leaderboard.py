"""The leaderboard: deltas against production, gates, the Rich table."""

from __future__ import annotations

import pytest
from rich.console import Console

from cartag.clock import FakeClock
from cartag.errors import NotFoundError
from cartag.settings import Settings
from cartag.store.db import Database
from cartag.training.sweep.leaderboard import (
    load_leaderboard,
    recall_deltas,
    rich_table,
    worst_delta,
)
from tests.support.leaderboard import ADV, TEST, make_board
from tests.support.sweep_data import examples, make_frozen_dataset


def test_deltas_and_gates(settings: Settings) -> None:
    board = make_board(settings)
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
    console.print(rich_table(make_board(settings)))
    text = console.export_text()
    for needle in ("production", "trial 0 *", "trial 1", "pass", "FAIL (2)", "-0.200 Stock"):
        assert needle in text, needle
    assert "test:advertiser=42" in text and "0.910" in text


def test_leaderboard_without_a_sweep_says_how_to_run_one(
    sqlite_db: Database, settings: Settings
) -> None:
    ref = make_frozen_dataset(sqlite_db, settings, FakeClock(), examples()[:12])
    with pytest.raises(NotFoundError, match="no sweep has run on cars@1; run `cartag train"):
        load_leaderboard(sqlite_db, settings, ref)
    with pytest.raises(NotFoundError, match="no dataset"):
        load_leaderboard(sqlite_db, settings, "nope@1")
