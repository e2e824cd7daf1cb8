"""A leaderboard built by hand: production and two trials, one passing the gates, one not."""

from __future__ import annotations

from typing import Any

from cartag.gates import gate_status
from cartag.settings import Settings
from cartag.training.sweep.leaderboard import Entry, Leaderboard

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


def make_board(settings: Settings) -> Leaderboard:
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
