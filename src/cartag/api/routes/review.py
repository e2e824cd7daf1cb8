"""Reviewing a draft dataset: the JSON API under /v1/datasets/{ref}/review.

Role ``reviewer`` or ``admin``; ``Authorization: Bearer`` or the login cookie:

* ``GET  /v1/datasets/{ref}/review/items`` — the queue, most suspicious first, with filters
  (a label's queue, undecided items only, a page or the items after a given one);
* ``GET  /v1/datasets/{ref}/review/progress`` — decided / all items of a queue;
* ``POST /v1/datasets/{ref}/review/decisions`` — accept / relabel / exclude one item;
* ``GET  /v1/datasets/{ref}/review/decisions`` — every decision (who, when), undone ones too;
* ``POST /v1/datasets/{ref}/review/items/{item_id}/undo`` — undo an item's last decision.

The pages (/review) are :mod:`cartag.api.routes.review_pages`.
"""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Path, Query
from sqlalchemy.orm import Session

from cartag.api.deps import ReviewerDep, StateDep
from cartag.api.paging import MAX_PAGE
from cartag.api.schemas.common import MAX_ID, error_responses
from cartag.api.schemas.review import (
    ClaimOut,
    DecisionIn,
    DecisionOut,
    DecisionResult,
    ItemOut,
    ItemsOut,
    ProgressOut,
    VersionOut,
)
from cartag.store import review as review_repo
from cartag.store import review_queue as queue_repo
from cartag.store.review_conflicts import conflict_claims, conflict_fields
from cartag.store.tables import DatasetItemRow, ReviewDecisionRow
from cartag.vocab import COLORS, IMAGE_TYPES

router = APIRouter(
    prefix="/v1/datasets", tags=["review"], responses=error_responses(401, 403, 404, 422, 503)
)

Status = Literal["included", "excluded", "flagged"]
Queue = Literal["image_type", "color"]
# Bounds of the integers a request names: past 2**63 - 1 the database driver raises (a
# 500), so they are 422s. A page beyond MAX_PAGE (cartag.api.paging; of up to MAX_LIMIT
# items) is past any dataset's end.
ItemId = Annotated[int, Path(ge=1, le=MAX_ID)]


def _decision_out(row: ReviewDecisionRow) -> DecisionOut:
    return DecisionOut.model_validate(row, from_attributes=True)


def item_out(
    ref: str, item: DatasetItemRow, last: ReviewDecisionRow | None, *, decided: bool
) -> ItemOut:
    """The API's view of a dataset item (``decided``: in the listing's queue)."""
    label = item.model_label
    model_field = "image_type" if label in IMAGE_TYPES else "color" if label in COLORS else None
    provenance = dict(item.provenance or {})
    flagged = item.status == "flagged"
    return ItemOut(
        id=item.id,
        content_sha256=item.content_sha256,
        image_type=item.image_type,
        color=item.color,
        status=item.status,
        reason=item.reason,
        split=item.split,
        width=item.width,
        height=item.height,
        suspicion=item.suspicion,
        model_label=label,
        model_confidence=item.model_confidence,
        model_field=model_field,
        provenance=provenance,
        thumb_url=f"/review/{ref}/thumb/{item.id}",
        last_decision=_decision_out(last) if last is not None else None,
        decided=decided,
        conflict=[
            ClaimOut(who=c.who, image_type=c.image_type, color=c.color)
            for c in conflict_claims(provenance)
        ],
        conflict_fields=list(conflict_fields(provenance)) if flagged else [],
    )


def progress_out(progress: queue_repo.Progress) -> ProgressOut:
    return ProgressOut(
        queue=progress.queue,
        total=progress.total,
        done=progress.done,
        undecided=progress.undecided,
    )


def listing(
    session: Session,
    ref: str,
    filters: queue_repo.ItemFilter,
    *,
    page: int = 1,
    limit: int,
    offset: int | None = None,
) -> ItemsOut:
    """One page of a version's items with the progress of the filter's queue.

    Raises:
        NotFoundError: No such version.
        InputError: A bad filter, page, limit or offset.
    """
    version = review_repo.get_version(session, ref)
    result = queue_repo.list_items(session, ref, filters, page=page, limit=limit, offset=offset)
    return ItemsOut(
        version=VersionOut.model_validate(version, from_attributes=True),
        total=result.total,
        page=result.page,
        offset=result.offset,
        limit=result.limit,
        items=[
            item_out(
                ref, item, result.last_decisions.get(item.id), decided=item.id in result.decided
            )
            for item in result.items
        ],
        progress=progress_out(queue_repo.progress(session, ref, filters.queue)),
    )


@router.get("/{ref}/review/items", response_model=ItemsOut)
def review_items(
    ref: str,
    state: StateDep,
    _: ReviewerDep,
    status: Status | None = Query(
        default=None,
        description="Only this status; default: included, flagged and reviewer-excluded items.",
    ),
    flagged: bool = Query(default=False, description="Only flagged items (wins over status)."),
    image_type: str | None = Query(default=None, max_length=32),
    color: str | None = Query(default=None, max_length=32),
    queue: Queue | None = Query(
        default=None,
        description="Only the items whose suspicion (or conflict) is about this label; "
        "items without a suspicion score are in both queues.",
    ),
    decided: bool | None = Query(
        default=None,
        description="false: only undecided items (the to-review queue); true: only decided "
        "ones — in `queue` when given (a decision about its label, or an exclusion).",
    ),
    page: int = Query(default=1, ge=1, le=MAX_PAGE),
    limit: int = Query(default=60, ge=1, le=review_repo.MAX_LIMIT),
    after: int | None = Query(
        default=None,
        ge=1,
        le=MAX_ID,
        description="List the items ranked after this item (instead of `page`): the next "
        "page of an undecided listing skips nothing while decided items leave it.",
    ),
) -> ItemsOut:
    """A draft's review queue: most suspicious first (unranked items last)."""
    filters = queue_repo.ItemFilter(image_type, color, status, flagged, queue, decided)
    with state.db.read() as session:
        offset = None
        if after is not None:
            offset = queue_repo.offset_after(session, ref, filters, after)
        return listing(session, ref, filters, page=page, limit=limit, offset=offset)


@router.get("/{ref}/review/progress", response_model=ProgressOut)
def review_progress(
    ref: str,
    state: StateDep,
    _: ReviewerDep,
    queue: Queue | None = Query(default=None, description="A queue; default: the whole version."),
) -> ProgressOut:
    """How many items of a queue are decided, of all a reviewer can act on."""
    with state.db.read() as session:
        return progress_out(queue_repo.progress(session, ref, queue))


@router.post(
    "/{ref}/review/decisions",
    response_model=DecisionResult,
    responses=error_responses(400, 409, 413),
)
def decide(ref: str, body: DecisionIn, state: StateDep, principal: ReviewerDep) -> DecisionResult:
    """Accept, relabel or exclude one item of a draft; stored and applied at once.

    A browser (cookie login) must send the header ``X-Cartag-CSRF: 1``.
    """
    with state.db.write() as session:
        decision, item = review_repo.record_decision(
            session,
            ref,
            body.item_id,
            action=body.action,
            field=body.field,
            label=body.label,
            user=principal.name,
            now=state.clock.now(),
        )
        return DecisionResult(
            decision=_decision_out(decision), item=item_out(ref, item, decision, decided=True)
        )


@router.post(
    "/{ref}/review/items/{item_id}/undo",
    response_model=DecisionResult,
    responses=error_responses(409),
)
def undo(ref: str, item_id: ItemId, state: StateDep, principal: ReviewerDep) -> DecisionResult:
    """Undo the item's latest decision: the item is restored, the decision marked undone."""
    with state.db.write() as session:
        decision, item = review_repo.undo_last(
            session, ref, item_id, user=principal.name, now=state.clock.now()
        )
        session.flush()
        last = review_repo.last_decisions(session, [item_id]).get(item_id)
        return DecisionResult(
            decision=_decision_out(decision),
            item=item_out(ref, item, last, decided=last is not None),
        )


@router.get("/{ref}/review/decisions", response_model=list[DecisionOut])
def list_decisions(
    ref: str,
    state: StateDep,
    _: ReviewerDep,
    item_id: int | None = Query(default=None, ge=1, le=MAX_ID),
) -> list[DecisionOut]:
    """Every decision on the version (or one item), oldest first, undone ones included."""
    with state.db.read() as session:
        return [_decision_out(d) for d in review_repo.decisions(session, ref, item_id=item_id)]
