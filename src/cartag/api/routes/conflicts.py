"""GET /v1/conflicts: images whose advertisers (or the global fix) disagree."""

from __future__ import annotations

from fastapi import APIRouter, Query

from cartag.api.deps import PrincipalDep, StateDep
from cartag.api.paging import (
    MAX_PAGE,
    OFFSET_DESCRIPTION,
    PAGE_DESCRIPTION,
    page_numbers,
    page_offset,
)
from cartag.api.schemas.common import MAX_ID, error_responses
from cartag.api.schemas.fixes import ConflictLabelOut, ConflictOut, ConflictsOut
from cartag.store import fixes as fix_repo

router = APIRouter(prefix="/v1", tags=["fixes"], responses=error_responses(401, 403, 422, 503))


@router.get("/conflicts", response_model=ConflictsOut)
def list_conflicts(
    state: StateDep,
    principal: PrincipalDep,
    limit: int = Query(default=100, ge=1, le=1000, description="Images a page."),
    page: int | None = Query(default=None, ge=1, le=MAX_PAGE, description=PAGE_DESCRIPTION),
    # Bounded: past 2**63 - 1 the database driver raises (a 500), so it is a 422 here.
    offset: int | None = Query(default=None, ge=0, le=MAX_ID, description=OFFSET_DESCRIPTION),
) -> ConflictsOut:
    """Images with manual labels that disagree, most recently fixed first.

    A page at a time: ``page`` (1-based) or ``offset``, not both (422). They name every
    advertiser's labels, so a key scoped to advertisers gets 403.
    """
    principal.require_unscoped("the conflicts between advertisers")
    start = page_offset(page, offset, limit)
    with state.db.read() as session:
        total, found = fix_repo.conflicts(session, limit=limit, offset=start)
        items = [
            ConflictOut(
                image_key=c.image.image_key,
                url=c.image.url,
                fields=c.fields,
                labels=[
                    ConflictLabelOut(
                        scope=f.scope,
                        advertiser_id=f.scope_key or None,
                        image_type=f.image_type,
                        color=f.color,
                        updated_by=f.updated_by,
                        updated_at=f.updated_at,
                    )
                    for f in c.fixes
                ],
            )
            for c in found
        ]
    number, pages = page_numbers(total, limit, start)
    return ConflictsOut(
        total=total, limit=limit, offset=start, page=number, pages=pages, items=items
    )
