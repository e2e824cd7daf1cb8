"""SQL of the monitoring figures: the ``classify_daily`` rollup and fixes per day.

The rollup counts answers per UTC day, advertiser, model version, status, type, color
and source; :mod:`cartag.pipeline.rollups` counts them in memory and adds them here
(:func:`record_counts`), :mod:`cartag.deploy.monitor` reads them back with the fixes made
in the same days.
"""

from __future__ import annotations

import datetime as dt
from collections import Counter
from collections.abc import Collection, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from sqlalchemy import func, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from cartag.store.tables import ClassifyDailyRow, FixAuditRow, ImageRow

KEY_COLUMNS = ("model_version", "status", "image_type", "color", "source")
RollupKey = tuple[str, str, str, str, str]
SUM_COLUMNS = ("confidence_n", "confidence_sum", "novelty_n", "novelty_sum", "far_n")


@dataclass
class DriftSums:
    """The drift sums of some answers (columns :data:`SUM_COLUMNS` of the rollup).

    Attributes:
        confidence_n: Answers with a stored confidence.
        confidence_sum: Their confidences added.
        novelty_n: Answers with a novelty whose model's far threshold is known.
        novelty_sum: Their novelties added.
        far_n: How many of those lay beyond the threshold.
    """

    confidence_n: int = 0
    confidence_sum: float = 0.0
    novelty_n: int = 0
    novelty_sum: float = 0.0
    far_n: int = 0

    def add(self, other: DriftSums) -> None:
        """Add ``other``'s sums to these."""
        for name in SUM_COLUMNS:
            setattr(self, name, getattr(self, name) + getattr(other, name))

    def values(self) -> dict[str, float]:
        """The sums by column name."""
        return {name: getattr(self, name) for name in SUM_COLUMNS}


def record_counts(
    session: Session,
    day: dt.date,
    advertiser_id: str,
    counts: Counter[RollupKey],
    sums: Mapping[RollupKey, DriftSums] | None = None,
) -> int:
    """Add counts (keyed by :data:`KEY_COLUMNS`) and their drift sums to the day's rollup
    (one bulk upsert).

    Returns:
        How many answers were counted.
    """
    if not counts:
        return 0
    sums = sums or {}
    # Sorted so concurrent writers lock rows in the same order (no deadlocks on PostgreSQL).
    rows: list[dict[str, Any]] = [
        {
            "day": day,
            "advertiser_id": advertiser_id,
            **dict(zip(KEY_COLUMNS, key, strict=True)),
            "count": n,
            **sums.get(key, DriftSums()).values(),
        }
        for key, n in sorted(counts.items())
    ]
    dialect = session.get_bind().dialect.name
    module: Any = postgresql if dialect == "postgresql" else sqlite
    stmt = module.insert(ClassifyDailyRow)
    t = ClassifyDailyRow
    stmt = stmt.on_conflict_do_update(
        index_elements=["day", "advertiser_id", *KEY_COLUMNS],
        set_={name: getattr(t, name) + stmt.excluded[name] for name in ("count", *SUM_COLUMNS)},
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


@dataclass(frozen=True)
class DriftCell:
    """The answers of one advertiser and model version with one (type, color), summed over
    a window, with their drift sums."""

    advertiser_id: str
    model_version: str
    image_type: str
    color: str
    count: int
    sums: DriftSums


def drift_cells(
    session: Session, since: dt.date, until: dt.date, version: str | None = None
) -> Iterator[DriftCell]:
    """Answers and drift sums per (advertiser, version, type, color) over [since, until].

    Args:
        session: Any session.
        since: First UTC day.
        until: Last UTC day.
        version: Only this model version's answers; None = every version's.
    """
    t = ClassifyDailyRow
    window = [t.day >= since, t.day <= until]
    if version is not None:
        window.append(t.model_version == version)
    columns = [func.sum(getattr(t, name)) for name in ("count", *SUM_COLUMNS)]
    stmt = (
        select(t.advertiser_id, t.model_version, t.image_type, t.color, *columns)
        .where(*window)
        .group_by(t.advertiser_id, t.model_version, t.image_type, t.color)
    )
    for (
        adv,
        model_version,
        image_type,
        color,
        n,
        conf_n,
        conf_sum,
        nov_n,
        nov_sum,
        far_n,
    ) in session.execute(stmt):
        sums = DriftSums(
            int(conf_n or 0),
            float(conf_sum or 0),
            int(nov_n or 0),
            float(nov_sum or 0),
            int(far_n or 0),
        )
        yield DriftCell(adv, model_version, image_type, color, int(n or 0), sums)


def first_days(session: Session, versions: Collection[str]) -> dict[str, dt.date]:
    """The first UTC day each model version answered (the start of its drift baseline)."""
    if not versions:
        return {}
    t = ClassifyDailyRow
    stmt = (
        select(t.model_version, func.min(t.day))
        .where(t.model_version.in_(list(versions)))
        .group_by(t.model_version)
    )
    return {str(version): day for version, day in session.execute(stmt)}


def first_fix_of_day(session: Session, audit: FixAuditRow) -> bool:
    """Whether ``audit`` is the first fix of its image in its advertiser's name on its UTC
    day: the one fix request of those :func:`fixes_between` counts as a fixed image.

    Fixes of one image are serialised on its row and take their ids in that order
    (:func:`cartag.pipeline.fixes.apply_fix`), so exactly one entry of each (day,
    advertiser, image) finds no earlier one, however many servers fix it at once.
    """
    day = audit.created_at.astimezone(dt.UTC).date()
    lo = dt.datetime.combine(day, dt.time(), dt.UTC)
    earlier = (
        select(FixAuditRow.id)
        .where(
            FixAuditRow.image_key == audit.image_key,
            FixAuditRow.advertiser_id == audit.advertiser_id,
            FixAuditRow.id < audit.id,
            FixAuditRow.created_at >= lo,
            FixAuditRow.created_at < lo + dt.timedelta(days=1),
        )
        .limit(1)
    )
    return session.execute(earlier).first() is None


def fixes_between(
    session: Session, start: dt.date, until: dt.date
) -> Iterator[tuple[dt.date, str, str | None]]:
    """(UTC day, advertiser, model version fixed) of the fixes in [start, until].

    One row per image an advertiser fixed on a day, however many fix requests it took:
    a fix corrected a minute later (a mis-click) is one fixed image, so a fix rate
    (fixed images ÷ answers) counts mistakes of the model, not edits, and stays ≤ 1.
    The version is the one whose answer the day's first fix corrected (recorded with
    the fix since 0013): a re-classification by a later model does not move the fix to
    it. Fixes recorded before 0013 fall back to the image's current version.
    """
    lo = dt.datetime.combine(start, dt.time(), dt.UTC)
    hi = dt.datetime.combine(until + dt.timedelta(days=1), dt.time(), dt.UTC)
    rows = session.execute(
        select(
            FixAuditRow.created_at,
            FixAuditRow.advertiser_id,
            FixAuditRow.image_key,
            func.coalesce(FixAuditRow.model_version, ImageRow.model_version),
        )
        .join(ImageRow, ImageRow.image_key == FixAuditRow.image_key)
        .where(FixAuditRow.created_at >= lo, FixAuditRow.created_at < hi)
        # The day's first fix names the version, whatever order the database returns.
        .order_by(FixAuditRow.id)
    )
    seen: set[tuple[dt.date, str, str]] = set()
    for created_at, advertiser_id, image_key, version in rows:
        day = created_at.astimezone(dt.UTC).date()
        if (day, advertiser_id, image_key) not in seen:
            seen.add((day, advertiser_id, image_key))
            yield day, advertiser_id, version
