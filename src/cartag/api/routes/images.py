"""Stored images: manual fixes and their audit trail, current answers, thumbnails.

* ``PUT /v1/images/{key}/fix`` (role ``fixer``): the audit's ``user`` is the key's name
  (a browser: its login session's key); ``on_behalf_of`` is free text a panel may add.
* ``GET /v1/images/{key}``, ``.../history``, ``.../thumbnail`` (any role).

A key scoped to advertisers (:mod:`cartag.api.access`) sees only their images and
makes only their overrides.
"""

from __future__ import annotations

import asyncio
from typing import Any, Final

from fastapi import APIRouter, Query, Request, Response

from cartag.api import access
from cartag.api.deps import FixerDep, PrincipalDep, StateDep
from cartag.api.schemas.classify import ResultOut
from cartag.api.schemas.common import error_responses
from cartag.api.schemas.fixes import AuditOut, FixIn, FixOut, HistoryOut
from cartag.errors import NotFoundError
from cartag.pipeline import fixes as fix_service
from cartag.pipeline import thumbnails
from cartag.redaction import strip_password
from cartag.store import advertisers as advertiser_repo
from cartag.store import fixes as fix_repo
from cartag.store import images as image_repo
from cartag.store.apikeys import Principal
from cartag.store.blobs import BlobStore, derived_path
from cartag.store.tables import FixAuditRow
from cartag.vocab import ADVERTISER_ID_MAX, ADVERTISER_ID_OR_EMPTY_PATTERN, read_stored_color

router = APIRouter(
    prefix="/v1/images", tags=["fixes"], responses=error_responses(401, 403, 404, 422, 503)
)

_THUMBNAIL_ANSWERS: Final[dict[int | str, dict[str, Any]]] = {
    200: {
        "description": "A JPEG, shorter side >= 128 px, longer side <= 256 px.",
        "content": {"image/jpeg": {"schema": {"type": "string", "format": "binary"}}},
    },
    304: {"description": "Not modified (If-None-Match matched the ETag)."},
    **error_responses(409),
}


def _audit_out(row: FixAuditRow, principal: Principal | None = None) -> AuditOut:
    # A scoped key is not told which other advertiser a global fix was made for.
    advertiser = row.advertiser_id
    if principal is not None and not principal.may_act_for(advertiser):
        advertiser = ""
    return AuditOut(
        id=row.id,
        image_key=row.image_key,
        advertiser_id=advertiser,
        scope=row.scope,
        user=row.user,
        on_behalf_of=row.on_behalf_of,
        changes=row.changes,
        comment=row.comment,
        created_at=row.created_at,
    )


@router.put("/{image_key}/fix", response_model=FixOut, responses=error_responses(400, 413))
def fix_image(image_key: str, body: FixIn, state: StateDep, principal: FixerDep) -> FixOut:
    """Correct an image's type and/or color, globally or for one advertiser.

    Takes effect at once in later classify answers: the advertiser's override
    wins over the global fix, which wins over the model. Labels are taken exactly as
    the vocabulary spells them (``red`` or ``Silver`` are 422). A key scoped to
    advertisers makes only their overrides (403 otherwise) of their images (404).
    """
    access.check_fix(principal, body.scope, body.advertiser_id)
    if principal.scoped:
        with state.db.read() as session:
            access.check_image(session, principal, image_key)
    audit, answer = fix_service.fix_image(
        state.db,
        state.clock,
        state.telemetry,
        image_key=image_key,
        advertiser_id=body.advertiser_id,
        author=fix_service.Author(principal.name, principal.key_id, body.behalf),
        scope=body.scope,
        image_type=body.image_type,
        color=body.color,
        comment=body.comment,
        max_distance=state.settings.phash_max_distance,
        low_confidence_threshold=state.settings.low_confidence_threshold,
        adapt=state.service.adapted,
    )
    return FixOut(audit=_audit_out(audit), result=ResultOut.model_validate(answer.to_dict()))


@router.get("/{image_key}", response_model=ResultOut)
def get_image(
    image_key: str,
    state: StateDep,
    principal: PrincipalDep,
    advertiser_id: str = Query(
        default="",
        max_length=ADVERTISER_ID_MAX,
        pattern=ADVERTISER_ID_OR_EMPTY_PATTERN,  # an advertiser id, or empty: none
        description="Whose overrides to apply (a key scoped to one advertiser: its own).",
    ),
) -> ResultOut:
    """The current answer for a stored image."""
    advertiser_id = access.answer_advertiser(principal, advertiser_id)
    if principal.scoped:
        with state.db.read() as session:
            access.check_image(session, principal, image_key)
    answer = fix_service.current_answer(
        state.db,
        advertiser_id,
        image_key,
        max_distance=state.settings.phash_max_distance,
        low_confidence_threshold=state.settings.low_confidence_threshold,
        adapt=state.service.adapted,
    )
    return ResultOut.model_validate(answer.to_dict())


@router.get("/{image_key}/history", response_model=HistoryOut)
def image_history(image_key: str, state: StateDep, principal: PrincipalDep) -> HistoryOut:
    """The audit trail of an image: every fix, oldest first.

    A scoped key sees the global fixes and its advertisers' overrides only.
    """
    with state.db.read() as session:
        access.check_image(session, principal, image_key)
        entries = fix_repo.history(session, image_key)
        image = image_repo.get_images(session, [image_key])[image_key]
        visible = [
            e
            for e in entries
            if e.scope == fix_repo.GLOBAL or principal.may_act_for(e.advertiser_id)
        ]
        # A scoped key sees the URL its advertisers named the image by: images are
        # shared, and the first URL stored may be another advertiser's.
        own = (
            advertiser_repo.advertiser_url(session, principal.advertisers, image_key)
            if principal.scoped
            else None
        )
        return HistoryOut(
            image_key=image_key,
            url=strip_password(own or image.url),
            model={
                "image_type": image.image_type,
                "color": read_stored_color(image.color),
                "confidence": image.confidence,
                "model_version": image.model_version,
            },
            entries=[_audit_out(e, principal) for e in visible],
        )


@router.get(
    "/{image_key}/thumbnail",
    response_class=Response,
    responses=_THUMBNAIL_ANSWERS,
)
async def image_thumbnail(
    request: Request, image_key: str, state: StateDep, principal: PrincipalDep
) -> Response:
    """A small JPEG of a stored image, made on first request and kept in the blob store.

    404 when no preview can be made (the URL needed a password, which cartag never
    keeps; the image server no longer serves it; the message says which); 409 when its
    URL now serves another image.
    """

    def look_up() -> thumbnails.ThumbnailSource:
        with state.db.read() as session:
            access.check_image(session, principal, image_key)
            row = image_repo.get_images(session, [image_key]).get(image_key)
            if row is None:
                raise NotFoundError(f"no image with key {image_key!r}")
            return thumbnails.ThumbnailSource(row.image_key, row.url, row.content_sha256)

    source = await asyncio.to_thread(look_up)
    name = thumbnails.thumbnail_name(source)
    # The blob's name derives from the image's content and the size: it never changes.
    etag = f'"{derived_path(name).rsplit("/", 1)[-1][:32]}"'
    headers = {"ETag": etag, "Cache-Control": "private, max-age=86400, immutable"}
    if request.headers.get("if-none-match") == etag:
        return Response(status_code=304, headers=headers)
    blobs: BlobStore = request.app.state.blobs
    data = await thumbnails.thumbnail(
        source,
        state.service.fetcher,
        blobs,
        max_pixels=state.settings.max_image_pixels,
        max_decode_bytes=state.settings.max_decode_mb * 1024 * 1024,
    )
    return Response(data, media_type="image/jpeg", headers=headers)
