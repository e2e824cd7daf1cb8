"""Drift data for tests: days of answers of known novelty, written through the real rollup.

The answers go through :class:`cartag.pipeline.rollups.RollupBuffer` (the classify path's
writer), so the report reads what production would have stored.
"""

from __future__ import annotations

import datetime as dt

from cartag.pipeline.results import ClassifyResult
from cartag.pipeline.rollups import RollupBuffer
from cartag.store.db import Database

FAR = 0.30  # the far threshold of the versions below
START = dt.date(2026, 11, 1)  # the versions' first day


def day_answers(
    n: int,
    version: str,
    *,
    far_share: float = 0.05,
    confidence: float = 0.95,
    placeholder_share: float = 0.0,
    novelty: bool = True,
) -> list[ClassifyResult]:
    """``n`` answers: ``far_share`` of them far (novelty 0.5, else 0.1); the first
    ``placeholder_share`` Placeholders, the rest Dealer Red/Blue alternating."""
    n_far = round(n * far_share)
    n_ph = round(n * placeholder_share)
    out = []
    for i in range(n):
        placeholder = i < n_ph
        out.append(
            ClassifyResult(
                url=f"https://cdn.example/{version}/{i}.jpg",
                image_key=f"{version}:{i}",
                status="cached" if i % 2 else "classified",
                image_type="Placeholder" if placeholder else "Dealer",
                color=None if placeholder else ("Red" if i % 2 else "Blue"),
                source="cache" if i % 2 else "model",
                confidence=confidence,
                model_version=version,
                novelty=(0.5 if i < n_far else 0.1) if novelty else None,
            )
        )
    return out


def seed_days(
    db: Database,
    advertiser: str,
    days: list[dt.date],
    answers: list[ClassifyResult],
    thresholds: dict[str, float] | None = None,
) -> None:
    """Write ``answers`` for ``advertiser`` on each of ``days``."""
    buffer = RollupBuffer(db, interval_s=0, far_threshold=(thresholds or {"m1": FAR}).get)
    for day in days:
        buffer.add(day, advertiser, answers)
    buffer.close()


def week(start: dt.date = START) -> list[dt.date]:
    """Seven days from ``start``."""
    return [start + dt.timedelta(days=i) for i in range(7)]
