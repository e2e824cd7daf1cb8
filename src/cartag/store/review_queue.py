"""A draft's review queues: which items a reviewer sees, in what order, and how far along.

Items are listed most suspicious first (items the ranking could not score last, then by
id). A **queue** is one label's work list:

* the ``image_type`` queue holds items whose suspicion is about the type (the model's
  label is a type), the ``color`` queue those whose suspicion is about the color;
* a conflict (an item flagged because its sources disagree) belongs to the queue of the
  label they disagree on (``provenance["conflict"]``: dealer-42 said Black, dealer-77
  said Grey is a color conflict), and stays there once decided; to both queues when both
  labels disagree or a flagged item's conflict is not recorded;
* items the ranking could not score end both queues;
* an item labelled Placeholder is never in the color queue: a Placeholder has no color.

An item is **decided** in a queue once it has a decision that is not undone about that
queue's label, or an exclusion (which settles both). Progress is decided ÷ all items of
the queue a reviewer can act on. Where a reviewer stopped is the item of their latest
decision in the queue: the queue resumes with the items ranked after it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Final

from sqlalchemy import ColumnElement, Text, and_, case, cast, exists, func, or_, select
from sqlalchemy.orm import Session

from cartag.errors import InputError
from cartag.store.review import (
    FIELDS,
    MAX_LIMIT,
    REVIEW_REASON,
    STATUSES,
    clean_label,
    get_item,
    get_version,
    last_decisions,
)
from cartag.store.review_conflicts import conflict_fields
from cartag.store.tables import DatasetItemRow, DatasetVersionRow, ReviewDecisionRow
from cartag.vocab import COLORS, IMAGE_TYPES

QUEUES: Final[tuple[str, ...]] = FIELDS
_VOCAB: Final[dict[str, tuple[str, ...]]] = {"image_type": IMAGE_TYPES, "color": COLORS}


@dataclass(frozen=True)
class ItemFilter:
    """Which items of a version to list.

    Attributes:
        image_type: Only items with this type label.
        color: Only items with this color label.
        status: Only items with this status. ``None`` lists what a reviewer can act
            on: included and flagged items, and items a reviewer excluded — not those
            an automatic filter excluded (unreadable, duplicates, too small...).
        flagged_only: Only flagged items (needing a human decision); wins over ``status``.
        queue: Only the ``image_type`` or ``color`` queue (module docstring); None: all.
        decided: Only items decided (True) or undecided (False) in ``queue`` (with no
            queue: with any decision or none); None: both.
    """

    image_type: str | None = None
    color: str | None = None
    status: str | None = None
    flagged_only: bool = False
    queue: str | None = None
    decided: bool | None = None


@dataclass(frozen=True)
class ItemPage:
    """One page of a version's review queue.

    Attributes:
        items: The items, most suspicious first (no suspicion: last), then by id.
        total: How many items match the filter over all pages.
        offset: How many matching items come before the first one listed.
        limit: Page size.
        last_decisions: The latest not-undone decision of each listed item, by item id.
        decided: The listed items decided in the filter's queue.
    """

    items: list[DatasetItemRow]
    total: int
    offset: int
    limit: int
    last_decisions: dict[int, ReviewDecisionRow]
    decided: frozenset[int] = frozenset()

    @property
    def page(self) -> int:
        """The 1-based page the first item falls on."""
        return self.offset // self.limit + 1


@dataclass(frozen=True)
class Progress:
    """How far the review of one queue (or of the whole version) is."""

    queue: str | None
    total: int
    done: int

    @property
    def undecided(self) -> int:
        return self.total - self.done


@dataclass(frozen=True)
class DraftSummary:
    """A draft version as the review page's picker shows it."""

    version: DatasetVersionRow
    items: int
    flagged: int
    decisions: int
    progress: dict[str, Progress] = field(default_factory=dict)


def _check_queue(queue: str | None) -> None:
    if queue is not None and queue not in QUEUES:
        raise InputError(f"unknown queue {queue!r}; choose from {', '.join(QUEUES)}", "queue")


def _decided(queue: str | None) -> ColumnElement[bool]:
    """Whether the item (correlated) has a live decision that settles it in ``queue``."""
    d = ReviewDecisionRow
    conditions: list[ColumnElement[bool]] = [d.item_id == DatasetItemRow.id, d.undone_at.is_(None)]
    if queue is not None:
        conditions.append(or_(d.field == queue, d.action == "exclude"))
    return exists().where(*conditions)


def _in_queue(session: Session, ref: str, queue: str) -> ColumnElement[bool]:
    item = DatasetItemRow
    # Conflicts stay in their label's queue once decided (no longer flagged). There are
    # few: their provenance is read here rather than in SQL (JSON functions differ between
    # SQLite and PostgreSQL); the text match only narrows the rows read.
    rows = session.execute(
        select(item.id, item.status, item.provenance).where(
            item.version_ref == ref,
            or_(item.status == "flagged", cast(item.provenance, Text).like('%"conflict"%')),
        )
    )
    conflicts = {
        item_id: conflict_fields(dict(provenance or {}))
        for item_id, status, provenance in rows
        if status == "flagged" or isinstance(dict(provenance or {}).get("conflict"), list)
    }
    scored = or_(item.model_label.is_(None), item.model_label.in_(_VOCAB[queue]))
    if conflicts:
        mine = [item_id for item_id, fields in conflicts.items() if queue in fields]
        scored = or_(and_(item.id.not_in(list(conflicts)), scored), item.id.in_(mine))
    if queue == "color":
        # A Placeholder has no color (LABELS.md): there is nothing to accept or relabel in
        # this queue, so it would stay undecided for ever. It joins once its type changes.
        scored = and_(scored, or_(item.image_type.is_(None), item.image_type != "Placeholder"))
    return scored


def _conditions(session: Session, ref: str, filters: ItemFilter) -> list[ColumnElement[bool]]:
    item = DatasetItemRow
    conditions: list[ColumnElement[bool]] = [item.version_ref == ref]
    if filters.image_type is not None:
        label = clean_label("image_type", filters.image_type, name="image_type")
        conditions.append(item.image_type == label)
    if filters.color is not None:
        conditions.append(item.color == clean_label("color", filters.color, name="color"))
    if filters.flagged_only:
        conditions.append(item.status == "flagged")
    elif filters.status is not None:
        if filters.status not in STATUSES:
            raise InputError(
                f"unknown status {filters.status!r}; choose from {', '.join(STATUSES)}",
                field="status",
            )
        conditions.append(item.status == filters.status)
    else:
        conditions.append(
            or_(
                item.status != "excluded",
                and_(item.status == "excluded", item.reason == REVIEW_REASON),
            )
        )
    _check_queue(filters.queue)
    if filters.queue is not None:
        conditions.append(_in_queue(session, ref, filters.queue))
    if filters.decided is not None:
        decided = _decided(filters.queue)
        conditions.append(decided if filters.decided else ~decided)
    return conditions


def _count(session: Session, conditions: list[ColumnElement[bool]]) -> int:
    return int(
        session.scalar(select(func.count()).select_from(DatasetItemRow).where(*conditions)) or 0
    )


def list_items(
    session: Session,
    ref: str,
    filters: ItemFilter | None = None,
    *,
    page: int = 1,
    limit: int = 60,
    offset: int | None = None,
) -> ItemPage:
    """A page of ``ref``'s items, most suspicious first.

    Args:
        session: Open session.
        ref: The version (draft or frozen: a frozen one can still be looked at).
        filters: Which items; default :class:`ItemFilter`'s (what a reviewer can act on).
        page: 1-based page number.
        limit: Items per page, 1 to :data:`~cartag.store.review.MAX_LIMIT`.
        offset: Start after this many matching items instead of at ``page``.

    Raises:
        NotFoundError: No such version.
        InputError: A filter value, ``page``, ``limit`` or ``offset`` is invalid
            (``.field`` names it).
    """
    if page < 1:
        raise InputError("page must be 1 or more", field="page")
    if not 1 <= limit <= MAX_LIMIT:
        raise InputError(f"limit must be between 1 and {MAX_LIMIT}", field="limit")
    if offset is not None and offset < 0:
        raise InputError("offset must be 0 or more", field="offset")
    get_version(session, ref)
    filters = filters or ItemFilter()
    conditions = _conditions(session, ref, filters)
    start = (page - 1) * limit if offset is None else offset
    # NULLS LAST spelled portably: SQLite and PostgreSQL order NULLs differently.
    items = list(
        session.scalars(
            select(DatasetItemRow)
            .where(*conditions)
            .order_by(
                DatasetItemRow.suspicion.is_(None),
                DatasetItemRow.suspicion.desc(),
                DatasetItemRow.id,
            )
            .offset(start)
            .limit(limit)
        )
    )
    ids = [item.id for item in items]
    decided: list[int] = []
    if ids:
        decided = list(
            session.scalars(
                select(DatasetItemRow.id).where(DatasetItemRow.id.in_(ids), _decided(filters.queue))
            )
        )
    return ItemPage(
        items=items,
        total=_count(session, conditions),
        offset=start,
        limit=limit,
        last_decisions=last_decisions(session, ids),
        decided=frozenset(decided),
    )


def _ranked_through(item: DatasetItemRow) -> ColumnElement[bool]:
    """Items ranked before ``item`` in the listing order, or ``item`` itself."""
    row = DatasetItemRow
    if item.suspicion is None:
        return or_(row.suspicion.is_not(None), row.id <= item.id)
    return and_(
        row.suspicion.is_not(None),
        or_(
            row.suspicion > item.suspicion, and_(row.suspicion == item.suspicion, row.id <= item.id)
        ),
    )


def offset_after(session: Session, ref: str, filters: ItemFilter, item_id: int) -> int:
    """How many items of the listing are ranked up to ``item_id`` (which need not be listed).

    A listing from this offset continues right after the item: a next page that skips
    nothing even when decided items have left an undecided listing meanwhile.

    Raises:
        NotFoundError: No such version, or no such item in it.
    """
    item = get_item(session, ref, item_id)
    return _count(session, [*_conditions(session, ref, filters), _ranked_through(item)])


def count(session: Session, ref: str, filters: ItemFilter) -> int:
    """How many items of ``ref`` match ``filters``.

    Raises:
        NotFoundError: No such version.
        InputError: A filter value is invalid.
    """
    get_version(session, ref)
    return _count(session, _conditions(session, ref, filters))


def last_decided(session: Session, ref: str, user: str, queue: str | None) -> int | None:
    """The item of ``user``'s latest live decision in ``queue`` of ``ref``: where they stopped."""
    _check_queue(queue)
    d = ReviewDecisionRow
    query = select(d.item_id).where(d.version_ref == ref, d.user == user, d.undone_at.is_(None))
    if queue is not None:
        query = query.where(or_(d.field == queue, d.action == "exclude"))
    return session.scalars(query.order_by(d.id.desc()).limit(1)).first()


def progress(session: Session, ref: str, queue: str | None) -> Progress:
    """Decided and all items of ``queue`` (None: the whole version) a reviewer can act on.

    Raises:
        NotFoundError: No such version.
        InputError: Unknown queue.
    """
    get_version(session, ref)
    conditions = _conditions(session, ref, ItemFilter(queue=queue))
    total = _count(session, conditions)
    done = _count(session, [*conditions, _decided(queue)])
    return Progress(queue, total, done)


def draft_versions(session: Session) -> list[DraftSummary]:
    """Every draft version with its counts and the progress of each queue, newest first."""
    versions = list(
        session.scalars(
            select(DatasetVersionRow)
            .where(DatasetVersionRow.status == "draft")
            .order_by(DatasetVersionRow.created_at.desc(), DatasetVersionRow.ref)
        )
    )
    refs = [v.ref for v in versions]
    if not refs:
        return []
    counts: dict[str, tuple[int, int]] = {
        ref: (int(total), int(flagged or 0))
        for ref, total, flagged in session.execute(
            select(
                DatasetItemRow.version_ref,
                func.count(),
                func.sum(case((DatasetItemRow.status == "flagged", 1), else_=0)),
            )
            .where(DatasetItemRow.version_ref.in_(refs))
            .group_by(DatasetItemRow.version_ref)
        )
    }
    decided: dict[str, int] = {
        ref: int(n)
        for ref, n in session.execute(
            select(ReviewDecisionRow.version_ref, func.count())
            .where(ReviewDecisionRow.version_ref.in_(refs), ReviewDecisionRow.undone_at.is_(None))
            .group_by(ReviewDecisionRow.version_ref)
        )
    }
    return [
        DraftSummary(
            v,
            *counts.get(v.ref, (0, 0)),
            decided.get(v.ref, 0),
            progress={queue: progress(session, v.ref, queue) for queue in QUEUES},
        )
        for v in versions
    ]
