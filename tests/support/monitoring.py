"""Monitoring data for tests: a month of daily answers and fixes of four advertisers.

Written through the real rollup writer (``store.monitoring.record_counts``) and as real
``fix_audit`` rows, so the report reads what production would have stored.

Advertisers (``TODAY`` is the last day; 300 answers a day unless said otherwise):

* ``steady``: 1% fix rate every day.
* ``jumpy``: 1% for weeks, then 10% over the last two days.
* ``newcomer``: only the last two days, 20 fixes a day (~6.7%).
* ``small``: 50 answers a day, 5 fixes a day on the last two days (too small to judge).

Model ``m1`` answered up to ``SWITCH`` (exclusive), ``m2`` from then on.
"""

from __future__ import annotations

import datetime as dt

from cartag.pipeline.results import ClassifyResult
from cartag.pipeline.rollups import rollup
from cartag.store.db import Database
from cartag.store.monitoring import record_counts
from cartag.store.tables import FixAuditRow
from tests.support.factories import add_image

TODAY = dt.date(2026, 11, 26)
FIRST = TODAY - dt.timedelta(days=20)
SWITCH = TODAY - dt.timedelta(days=10)


def answers(n: int, version: str) -> list[ClassifyResult]:
    """``n`` answers: two thirds Dealer (Red/Blue alternating), one third Placeholder."""
    out = []
    for i in range(n):
        if i % 3 == 2:
            out.append(
                ClassifyResult(
                    url=f"https://cdn.example/{i}.jpg",
                    image_key=f"k{i}",
                    status="cached",
                    image_type="Placeholder",
                    source="cache",
                    model_version=version,
                )
            )
        else:
            out.append(
                ClassifyResult(
                    url=f"https://cdn.example/{i}.jpg",
                    image_key=f"k{i}",
                    status="classified",
                    image_type="Dealer",
                    color="Red" if i % 2 else "Blue",
                    source="model",
                    model_version=version,
                )
            )
    return out


def _plan(day: dt.date) -> dict[str, tuple[int, int]]:
    """(answers, fixes) per advertiser on ``day``."""
    recent = day >= TODAY - dt.timedelta(days=1)
    plan = {"steady": (300, 3), "jumpy": (300, 30 if recent else 3)}
    if recent:
        plan["newcomer"] = (300, 20)
        plan["small"] = (50, 5)
    else:
        plan["small"] = (50, 0)
    return plan


def seed_monitoring(db: Database) -> None:
    """Store the scenario of the module docstring."""
    # Each fix of a day is of another image: the report counts fixed images, not requests.
    most = max(fixes for day in (FIRST, TODAY) for _, fixes in _plan(day).values())
    keys = {
        version: [add_image(db, model_version=version).image_key for _ in range(most)]
        for version in ("m1", "m2")
    }
    audits = []
    with db.write() as session:
        day = FIRST
        while day <= TODAY:
            version = "m1" if day < SWITCH else "m2"
            noon = dt.datetime.combine(day, dt.time(12), dt.UTC)
            for advertiser, (n, fixes) in _plan(day).items():
                record_counts(session, day, advertiser, rollup(answers(n, version)))
                audits += [
                    FixAuditRow(
                        image_key=keys[version][i],
                        advertiser_id=advertiser,
                        scope="advertiser",
                        user="alice",
                        changes={"color": {"from": "Red", "to": "Burgundy"}},
                        comment=None,
                        created_at=noon + dt.timedelta(minutes=i),
                    )
                    for i in range(fixes)
                ]
            day += dt.timedelta(days=1)
        session.add_all(audits)
