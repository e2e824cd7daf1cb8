"""Reviewing a draft dataset version: the suspicion-ranked queue and reviewers' decisions.

A reviewer looks at a draft version's items, most suspicious first, and decides:

* ``accept``  — the current label is right: the item stays (or becomes) included;
* ``relabel`` — the label of ``field`` becomes ``label`` and the item is included;
* ``exclude`` — the item is left out of training (status ``excluded``, reason ``review``).

Each decision is stored (who, when, the label before and after, the whole prior state
of the item) and applied to the item in the same transaction, so a draft always reflects
its review. ``undo_last`` reverts an item's latest decision, restoring the item exactly
and marking the decision undone (it is kept for the audit). Frozen versions refuse
decisions. The functions take a :class:`~sqlalchemy.orm.Session` inside a transaction
(``Database.write()``) and never commit. Listing the queue (by label, undecided items,
progress, where a reviewer stopped) is :mod:`cartag.store.review_queue`.
"""

from __future__ import annotations

import datetime as dt
from typing import Any, Final, Literal

from sqlalchemy import select
from sqlalchemy.orm import Session

from cartag.errors import ConflictError, InputError, NotFoundError
from cartag.store.tables import DatasetItemRow, DatasetVersionRow, ReviewDecisionRow
from cartag.vocab import COLORS, IMAGE_TYPES, normalize_color, normalize_image_type

Action = Literal["accept", "relabel", "exclude"]
Field = Literal["image_type", "color"]
ACTIONS: Final[tuple[str, ...]] = ("accept", "relabel", "exclude")
FIELDS: Final[tuple[str, ...]] = ("image_type", "color")
STATUSES: Final[tuple[str, ...]] = ("included", "excluded", "flagged")
# The reason an item excluded by a reviewer carries (automatic filters use others).
REVIEW_REASON: Final[str] = "review"
MAX_LIMIT: Final[int] = 500
# The item attributes a decision may change: what an undo restores.
_STATE: Final[tuple[str, ...]] = ("status", "reason", "image_type", "color")


def get_version(session: Session, ref: str, *, for_update: bool = False) -> DatasetVersionRow:
    """The version named ``ref`` (``NAME@NUMBER``).

    Args:
        session: Open session.
        ref: The version's ref.
        for_update: Lock the row (PostgreSQL) so that a concurrent freeze waits for
            this transaction, or this one sees the version frozen.

    Raises:
        NotFoundError: No such version.
    """
    query = select(DatasetVersionRow).where(DatasetVersionRow.ref == ref)
    if for_update:
        query = query.with_for_update()
    row = session.scalars(query).one_or_none()
    if row is None:
        raise NotFoundError(
            f"dataset version {ref!r} does not exist; `cartag dataset list` shows the versions"
        )
    return row


def last_decisions(session: Session, item_ids: list[int]) -> dict[int, ReviewDecisionRow]:
    """The latest decision that is not undone, for each of ``item_ids`` that has one."""
    if not item_ids:
        return {}
    rows = session.scalars(
        select(ReviewDecisionRow)
        .where(ReviewDecisionRow.item_id.in_(item_ids), ReviewDecisionRow.undone_at.is_(None))
        .order_by(ReviewDecisionRow.id)
    )
    return {row.item_id: row for row in rows}


def decisions(
    session: Session, ref: str, *, item_id: int | None = None, include_undone: bool = True
) -> list[ReviewDecisionRow]:
    """The decisions made on ``ref`` (or on one of its items), oldest first.

    Raises:
        NotFoundError: No such version.
    """
    get_version(session, ref)
    query = select(ReviewDecisionRow).where(ReviewDecisionRow.version_ref == ref)
    if item_id is not None:
        query = query.where(ReviewDecisionRow.item_id == item_id)
    if not include_undone:
        query = query.where(ReviewDecisionRow.undone_at.is_(None))
    return list(session.scalars(query.order_by(ReviewDecisionRow.id)))


def get_item(session: Session, ref: str, item_id: int) -> DatasetItemRow:
    """Item ``item_id`` of version ``ref``.

    Raises:
        NotFoundError: No such item in this version (an item of another version included).
    """
    item = session.get(DatasetItemRow, item_id)
    if item is None or item.version_ref != ref:
        raise NotFoundError(f"dataset version {ref!r} has no item {item_id}")
    return item


def _draft(session: Session, ref: str) -> DatasetVersionRow:
    version = get_version(session, ref, for_update=True)
    if version.status != "draft":
        raise ConflictError(
            f"dataset version {ref!r} is {version.status}: only a draft can be reviewed. "
            f"Create a new draft from it with `cartag dataset create {version.name} --from {ref}`."
        )
    return version


def clean_label(field: str, label: str, *, name: str = "label") -> str:
    """``label`` in the vocabulary of ``field``; errors name the request field ``name``."""
    try:
        if field == "image_type":
            return normalize_image_type(label)
        color = normalize_color(label)
    except ValueError as exc:
        raise InputError(str(exc), field=name) from exc
    if color is None:
        raise InputError(f"a color is required; choose from {', '.join(COLORS)}", field=name)
    return color


def _snapshot(item: DatasetItemRow) -> dict[str, Any]:
    return {name: getattr(item, name) for name in _STATE}


def record_decision(
    session: Session,
    ref: str,
    item_id: int,
    *,
    action: str,
    field: str = "image_type",
    label: str | None = None,
    user: str,
    now: dt.datetime,
) -> tuple[ReviewDecisionRow, DatasetItemRow]:
    """Store a reviewer's decision and apply it to the draft item.

    Args:
        session: Session in a write transaction.
        ref: The draft version.
        item_id: One of its items.
        action: ``accept``, ``relabel`` or ``exclude``.
        field: The label the decision is about: ``image_type`` or ``color``.
        label: The new label (``relabel`` only), e.g. ``Stock`` or ``Red``.
        user: Who decided (the API key's name).
        now: When (from the Clock).

    Returns:
        The stored decision and the updated item.

    Raises:
        NotFoundError: No such version, or the item is not one of its items.
        ConflictError: The version is frozen, or the item was excluded by an automatic
            filter (unreadable, duplicate...) and cannot be trained on.
        InputError: Unknown action/field, a missing or unknown label, or a label that
            does not fit the item (a Placeholder has no color); ``.field`` names it.
    """
    if action not in ACTIONS:
        raise InputError(f"unknown action {action!r}; choose from {', '.join(ACTIONS)}", "action")
    if field not in FIELDS:
        raise InputError(f"unknown field {field!r}; choose from {', '.join(FIELDS)}", "field")
    if action == "relabel" and label is None:
        choices = IMAGE_TYPES if field == "image_type" else COLORS
        raise InputError(f"relabel needs a label: one of {', '.join(choices)}", field="label")
    if action != "relabel" and label is not None:
        raise InputError(f"{action} takes no label; use action 'relabel'", field="label")
    _draft(session, ref)
    item = get_item(session, ref, item_id)
    if item.status == "excluded" and item.reason != REVIEW_REASON:
        raise ConflictError(
            f"item {item_id} was excluded by the {item.reason or 'automatic'} filter and "
            "cannot be trained on; add the image again in a new dataset version if it is usable"
        )
    before = _snapshot(item)
    current = getattr(item, field)
    to_label = current
    if action == "accept":
        if current is None:
            raise InputError(
                f"item {item_id} has no {field} label to accept; relabel it instead", "action"
            )
        item.status, item.reason = "included", None
    elif action == "relabel":
        assert label is not None
        to_label = clean_label(field, label)
        if field == "color" and item.image_type == "Placeholder":
            raise InputError(
                f"item {item_id} is a Placeholder, which has no color; relabel its type first",
                field="label",
            )
        setattr(item, field, to_label)
        if field == "image_type" and to_label == "Placeholder":
            item.color = None  # a Placeholder never has a color
        item.status, item.reason = "included", None
    else:
        item.status, item.reason = "excluded", REVIEW_REASON
    decision = ReviewDecisionRow(
        version_ref=ref,
        item_id=item_id,
        action=action,
        field=field,
        from_label=current,
        to_label=to_label,
        user=user,
        created_at=now,
        before=before,
    )
    session.add(decision)
    session.flush()
    return decision, item


def undo_last(
    session: Session, ref: str, item_id: int, *, user: str, now: dt.datetime
) -> tuple[ReviewDecisionRow, DatasetItemRow]:
    """Undo the latest decision on an item: restore the item, mark the decision undone.

    Returns:
        The decision now undone and the restored item.

    Raises:
        NotFoundError: No such version or item.
        ConflictError: The version is frozen, or the item has no decision left to undo.
    """
    _draft(session, ref)
    item = get_item(session, ref, item_id)
    decision = session.scalars(
        select(ReviewDecisionRow)
        .where(ReviewDecisionRow.item_id == item_id, ReviewDecisionRow.undone_at.is_(None))
        .order_by(ReviewDecisionRow.id.desc())
        .limit(1)
    ).one_or_none()
    if decision is None:
        raise ConflictError(f"item {item_id} has no decision to undo")
    for name in _STATE:
        setattr(item, name, decision.before.get(name))
    decision.undone_at = now
    decision.undone_by = user
    session.flush()
    return decision, item
