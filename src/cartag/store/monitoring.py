"""SQL of the monitoring figures: the ``classify_daily`` rollup and fixes per day.

The rollup counts answers per UTC day, advertiser, model version, status, type, color
and source; :mod:`cartag.pipeline.rollups` counts them in memory and adds them here
(:func:`record_counts`), :mod:`cartag.deploy.monitor` reads them back with the fixes made
in the same days.
"""

from __future__ import annotations

import datetime as dt
from collections import Counter
from collections.abc import Iterator
from typing import Any, Literal

from sqlalchemy import func, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from cartag.store.tables import ClassifyDailyRow, FixAuditRow, ImageRow

KEY_COLUMNS = ("model_version", "status", "image_type", "color", "source")
RollupKey = tuple[str, str, str, str, str]


def record_counts(
    session: Session,
    day: dt.date,
    advertiser_id: str,
    counts: Counter[RollupKey],
) -> int:
    """Add counts (keyed by :data:`KEY_COLUMNS`) to the day's rollup (one bulk upsert).

    Returns:
        How many answers were counted.
    """
    if not counts:
        return 0
    # Sorted so concurrent writers lock rows in the same order (no deadlocks on PostgreSQL).
    rows: list[dict[str, Any]] = [
        {
            "day": day,
            "advertiser_id": advertiser_id,
            **dict(zip(KEY_COLUMNS, key, strict=True)),
            "count": n,
        }
        for key, n in sorted(counts.items())
    ]
    dialect = session.get_bind().dialect.name
    module: Any = postgresql if dialect == "postgresql" else sqlite
    stmt = module.insert(ClassifyDailyRow)
    stmt = stmt.on_conflict_do_update(
        index_elements=["day", "advertiser_id", *KEY_COLUMNS],
        set_={"count": ClassifyDailyRow.count + stmt.excluded["count"]},
    )
    session.execute(stmt, rows)
    return sum(counts.values())


def answer_mix(
    session: Session,
    since: dt.date,
    until: dt.date,
    by: Literal["image_type", "color"],
    advertiser: str | None = None,
) -> Iterator[tuple[dt.date, str | None, str | None, int]]:
    """Answers per (day, model version, type or color) in [since, until].

    Args:
        session: Any session.
        since: First UTC day.
        until: Last UTC day.
        by: Which label to group by.
        advertiser: Only this advertiser's answers; None = everyone's.
    """
    t = ClassifyDailyRow
    window = [t.day >= since, t.day <= until]
    if advertiser is not None:
        window.append(t.advertiser_id == advertiser)
    label = t.image_type if by == "image_type" else t.color
    for day, version, value, n in session.execute(
        select(t.day, t.model_version, label, func.sum(t.count))
        .where(*window)
        .group_by(t.day, t.model_version, label)
    ):
        yield day, version, value, int(n)


def answers_by_status(
    session: Session, since: dt.date, until: dt.date, advertiser: str | None = None
) -> Iterator[tuple[dt.date, str | None, str, int]]:
    """Answers per (day, model version, status) in [since, until]: ``cached`` ones came
    from the store, ``classified`` ones from the model (the cache hit rate).

    Args:
        session: Any session.
        since: First UTC day.
        until: Last UTC day.
        advertiser: Only this advertiser's answers; None = everyone's.
    """
    t = ClassifyDailyRow
    window = [t.day >= since, t.day <= until]
    if advertiser is not None:
        window.append(t.advertiser_id == advertiser)
    for day, version, status, n in session.execute(
        select(t.day, t.model_version, t.status, func.sum(t.count))
        .where(*window)
        .group_by(t.day, t.model_version, t.status)
    ):
        yield day, version, status, int(n)


def answers_per_advertiser(
    session: Session, since: dt.date, until: dt.date
) -> Iterator[tuple[dt.date, str, str | None, int]]:
    """Answers per (day, advertiser, model version) in [since, until]."""
    t = ClassifyDailyRow
    for day, adv, version, n in session.execute(
        select(t.day, t.advertiser_id, t.model_version, func.sum(t.count))
        .where(t.day >= since, t.day <= until)
        .group_by(t.day, t.advertiser_id, t.model_version)
    ):
        yield day, adv, version, int(n)


def fixes_between(
    session: Session, start: dt.date, until: dt.date
) -> Iterator[tuple[dt.datetime, str, str | None]]:
    """(time, advertiser, model version of the fixed image) of every fix in [start, until].

    Days are UTC days.
    """
    lo = dt.datetime.combine(start, dt.time(), dt.UTC)
    hi = dt.datetime.combine(until + dt.timedelta(days=1), dt.time(), dt.UTC)
    rows = session.execute(
        select(FixAuditRow.created_at, FixAuditRow.advertiser_id, ImageRow.model_version)
        .join(ImageRow, ImageRow.image_key == FixAuditRow.image_key)
        .where(FixAuditRow.created_at >= lo, FixAuditRow.created_at < hi)
    )
    yield from rows
