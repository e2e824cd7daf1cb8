"""Manual fixes and their audit trail: PUT /v1/images/{key}/fix, GET .../history."""

from __future__ import annotations

from fastapi import APIRouter, Query

from cartag.api.deps import FixerDep, PrincipalDep, StateDep
from cartag.api.schemas.classify import ResultOut
from cartag.api.schemas.common import error_responses
from cartag.api.schemas.fixes import AuditOut, FixIn, FixOut, HistoryOut
from cartag.pipeline import fixes as fix_service
from cartag.store import fixes as fix_repo
from cartag.store import images as image_repo
from cartag.store.tables import FixAuditRow
from cartag.vocab import read_stored_color

router = APIRouter(
    prefix="/v1/images", tags=["fixes"], responses=error_responses(401, 403, 404, 422)
)


def _audit_out(row: FixAuditRow) -> AuditOut:
    return AuditOut(
        id=row.id,
        image_key=row.image_key,
        advertiser_id=row.advertiser_id,
        scope=row.scope,
        user=row.user,
        changes=row.changes,
        comment=row.comment,
        created_at=row.created_at,
    )


@router.put("/{image_key}/fix", response_model=FixOut, responses=error_responses(400, 413))
def fix_image(image_key: str, body: FixIn, state: StateDep, _: FixerDep) -> FixOut:
    """Correct an image's type and/or color, globally or for one advertiser.

    Takes effect at once in later classify answers: the advertiser's override
    wins over the global fix, which wins over the model.
    """
    audit, answer = fix_service.fix_image(
        state.db,
        state.clock,
        state.telemetry,
        image_key=image_key,
        advertiser_id=body.advertiser_id,
        user=body.user,
        scope=body.scope,
        image_type=body.image_type,
        color=body.color,
        comment=body.comment,
        max_distance=state.settings.phash_max_distance,
        low_confidence_threshold=state.settings.low_confidence_threshold,
    )
    return FixOut(audit=_audit_out(audit), result=ResultOut.model_validate(answer.to_dict()))


@router.get("/{image_key}", response_model=ResultOut)
def get_image(
    image_key: str,
    state: StateDep,
    _: PrincipalDep,
    advertiser_id: str = Query(default="", max_length=128, description="Whose overrides to apply."),
) -> ResultOut:
    """The current answer for a stored image."""
    answer = fix_service.current_answer(
        state.db,
        advertiser_id,
        image_key,
        max_distance=state.settings.phash_max_distance,
        low_confidence_threshold=state.settings.low_confidence_threshold,
    )
    return ResultOut.model_validate(answer.to_dict())


@router.get("/{image_key}/history", response_model=HistoryOut)
def image_history(image_key: str, state: StateDep, _: PrincipalDep) -> HistoryOut:
    """The audit trail of an image: every fix, oldest first."""
    with state.db.read() as session:
        entries = fix_repo.history(session, image_key)
        image = image_repo.get_images(session, [image_key])[image_key]
        return HistoryOut(
            image_key=image_key,
            url=image.url,
            model={
                "image_type": image.image_type,
                "color": read_stored_color(image.color),
                "confidence": image.confidence,
                "model_version": image.model_version,
            },
            entries=[_audit_out(e) for e in entries],
        )
