"""GET /v1/conflicts: images whose advertisers (or the global fix) disagree."""

from __future__ import annotations

from fastapi import APIRouter, Query

from cartag.api.deps import PrincipalDep, StateDep
from cartag.api.schemas.common import MAX_ID, error_responses
from cartag.api.schemas.fixes import ConflictLabelOut, ConflictOut, ConflictsOut
from cartag.store import fixes as fix_repo

router = APIRouter(prefix="/v1", tags=["fixes"], responses=error_responses(401, 403, 422, 503))


@router.get("/conflicts", response_model=ConflictsOut)
def list_conflicts(
    state: StateDep,
    principal: PrincipalDep,
    limit: int = Query(default=100, ge=1, le=1000),
    # Bounded: past 2**63 - 1 the database driver raises (a 500), so it is a 422 here.
    offset: int = Query(default=0, ge=0, le=MAX_ID),
) -> ConflictsOut:
    """Images with manual labels that disagree, most recently fixed first.

    They name every advertiser's labels, so a key scoped to advertisers gets 403.
    """
    principal.require_unscoped("the conflicts between advertisers")
    with state.db.read() as session:
        total, page = fix_repo.conflicts(session, limit=limit, offset=offset)
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
            for c in page
        ]
    return ConflictsOut(total=total, items=items)
