"""Advertisers: who has images (with counts), their settings, their images as answered now.

* ``GET /v1/advertisers`` — the advertisers with images or settings, with counts (a
  scoped key: its own), by id, a page at a time, searched by id with ``q``;
* ``PUT /v1/advertisers/{id}`` — its settings (admin): re-classification after promotions,
  answers adapted to its fixes;
* ``GET /v1/advertisers/{id}/images`` — its images as a classify would answer them now,
  filtered and paged, unsure ones first (:mod:`cartag.pipeline.inventory`).
"""

from __future__ import annotations

from typing import Annotated
from urllib.parse import quote

from fastapi import APIRouter, Depends, Path, Query
from starlette.convertors import Convertor, register_url_convertor

from cartag.api.deps import PrincipalDep, StateDep, require
from cartag.api.paging import MAX_PAGE
from cartag.api.schemas.advertisers import (
    AdvertiserImageOut,
    AdvertiserImagesOut,
    AdvertiserIn,
    AdvertiserOut,
    AdvertisersOut,
    ColorFilter,
    ImageCountsOut,
)
from cartag.api.schemas.common import error_responses
from cartag.api.state import AppState
from cartag.pipeline import inventory
from cartag.pipeline.adaptation import enabled as adaptation_enabled
from cartag.pipeline.thumbnails import ThumbnailSource, unavailable_reason
from cartag.redaction import strip_password
from cartag.store import advertisers as advertiser_repo
from cartag.store.advertisers import AdvertiserSummary
from cartag.store.apikeys import Principal
from cartag.vocab import ADVERTISER_ID_MAX, ADVERTISER_ID_PATTERN, ImageType

router = APIRouter(
    prefix="/v1/advertisers", tags=["advertisers"], responses=error_responses(401, 403, 422, 503)
)


class AdvertiserIdConvertor(Convertor[str]):
    """An advertiser id in a route's path (``{advertiser_id:advertiser}``).

    An id may hold slashes (:data:`cartag.vocab.ADVERTISER_ID_PATTERN`), so it takes the rest of the
    path, but for a trailing ``/images``: that is the route of its images, and a PUT
    there stays a 405. (An id that itself ends in ``/images`` cannot be named in a path.)
    The id ``images`` alone can: the look-behind would also see the slash before it.
    """

    regex = "(?:.+(?<!/images)|images)"

    def convert(self, value: str) -> str:
        return value

    def to_string(self, value: str) -> str:
        return value


register_url_convertor("advertiser", AdvertiserIdConvertor())

AdminDep = Annotated[Principal, Depends(require("admin"))]
AdvertiserId = Annotated[
    str, Path(min_length=1, max_length=ADVERTISER_ID_MAX, pattern=ADVERTISER_ID_PATTERN)
]


def _advertiser_out(row: AdvertiserSummary, default_adaptation: bool) -> AdvertiserOut:
    return AdvertiserOut(
        advertiser_id=row.advertiser_id,
        images=row.images,
        overrides=row.overrides,
        last_seen_at=row.last_seen_at,
        reclassify_on_promote=row.reclassify_on_promote,
        adapt_answers=row.adapt_answers,
        adapting=adaptation_enabled(row.adapt_answers, default_adaptation),
        updated_at=row.settings_updated_at,
    )


def image_out(item: inventory.Listed) -> AdvertiserImageOut:
    """One listed image as the API (and the fix page) shows it."""
    image, answer = item.image, item.answer
    source = ThumbnailSource(image.image_key, image.url, image.content_sha256)
    missing = unavailable_reason(source)
    return AdvertiserImageOut(
        image_key=image.image_key,
        # Its own URL: the image's may be another advertiser's (images are shared).
        url=strip_password(image.shown_url),
        thumbnail_url=None
        if missing
        else f"/v1/images/{quote(image.image_key, safe=':')}/thumbnail",
        thumbnail_unavailable=missing,
        image_type=answer.image_type,
        color=answer.color,
        source=answer.source,
        type_source=answer.type_source,
        color_source=answer.color_source,
        confidence=answer.confidence,
        model_version=answer.model_version,
        low_confidence=answer.low_confidence,
        color_reason=answer.color_reason,
        fixed=item.fixed,
        fix_scope=item.fix_scope,
        fixed_by=item.fixed_by,
        fixed_at=item.fixed_at,
        last_seen_at=image.last_seen_at,
    )


def list_images(
    state: AppState,
    advertiser_id: str,
    filters: inventory.ImageFilter,
    page: int,
    limit: int,
) -> AdvertiserImagesOut:
    """A page of the advertiser's images (the caller checked the key may see them)."""
    listing = inventory.list_images(
        state.db,
        advertiser_id,
        filters,
        page=page,
        limit=limit,
        max_distance=state.settings.phash_max_distance,
        low_confidence_threshold=state.settings.low_confidence_threshold,
        adapt=state.service.adapted,
    )
    return AdvertiserImagesOut(
        advertiser_id=advertiser_id,
        total=listing.total,
        page=listing.page,
        pages=listing.pages,
        limit=listing.limit,
        counts=ImageCountsOut(
            images=listing.images, low_confidence=listing.low_confidence, fixed=listing.fixed
        ),
        items=[image_out(item) for item in listing.items],
    )


def summaries_page(
    state: AppState,
    principal: Principal,
    *,
    search: str = "",
    page: int = 1,
    limit: int = advertiser_repo.PAGE_LIMIT,
) -> tuple[advertiser_repo.SummaryPage, list[AdvertiserOut]]:
    """A page of the advertisers a key may see (:func:`cartag.store.advertisers.summary_page`:
    the ids are read and searched, the counts only for the page's), and its advertisers
    as the API answers them.

    Args:
        state: The app.
        principal: Whose advertisers (a scoped key: its own).
        search: Only ids that hold this, ignoring case (a prefix or any part of one).
        page: 1-based; past the end: the last page.
        limit: Advertisers per page.
    """
    scope = principal.advertisers if principal.scoped else None
    with state.db.read() as session:
        found = advertiser_repo.summary_page(session, scope, search=search, page=page, limit=limit)
    default = state.settings.advertiser_adaptation
    return found, [_advertiser_out(row, default) for row in found.summaries]


@router.get("", response_model=AdvertisersOut)
def list_advertisers(
    state: StateDep,
    principal: PrincipalDep,
    q: str = Query(
        default="",
        max_length=ADVERTISER_ID_MAX,
        description="Only advertisers whose id holds this, ignoring case (any part of it).",
    ),
    page: int = Query(default=1, ge=1, le=MAX_PAGE, description="1-based; past the end: the last."),
    limit: int = Query(default=advertiser_repo.PAGE_LIMIT, ge=1, le=advertiser_repo.MAX_PAGE_LIMIT),
) -> AdvertisersOut:
    """The advertisers that have images or settings, by id, with counts, a page at a time.

    A key scoped to advertisers sees only its own. ``total`` counts those the search
    keeps, over all pages.
    """
    listing, items = summaries_page(state, principal, search=q.strip(), page=page, limit=limit)
    return AdvertisersOut(
        total=listing.total,
        page=listing.page,
        pages=listing.pages,
        limit=listing.limit,
        q=listing.search,
        items=items,
    )


@router.put(
    "/{advertiser_id:advertiser}", response_model=AdvertiserOut, responses=error_responses(400, 413)
)
def set_advertiser(
    advertiser_id: AdvertiserId, body: AdvertiserIn, state: StateDep, _: AdminDep
) -> AdvertiserOut:
    """Change an advertiser's settings; a field left out keeps its value.

    ``reclassify_on_promote``: re-classify its images after each promotion.
    ``adapt_answers``: adapt its answers to its fixes (``source: advertiser_model``);
    null follows the deployment's ``CARTAG_ADVERTISER_ADAPTATION``.
    """
    fields = body.model_fields_set
    with state.db.write() as session:
        advertiser_repo.set_advertiser(
            session,
            advertiser_id,
            reclassify_on_promote=(
                bool(body.reclassify_on_promote)
                if "reclassify_on_promote" in fields
                else advertiser_repo.KEEP
            ),
            adapt_answers=body.adapt_answers if "adapt_answers" in fields else advertiser_repo.KEEP,
            now=state.clock.now(),
        )
        [row] = advertiser_repo.advertiser_summaries(session, [advertiser_id])
        return _advertiser_out(row, state.settings.advertiser_adaptation)


@router.get("/{advertiser_id:advertiser}/images", response_model=AdvertiserImagesOut)
def advertiser_images(
    advertiser_id: AdvertiserId,
    state: StateDep,
    principal: PrincipalDep,
    low_confidence: bool | None = Query(
        default=None, description="true: only images the model was unsure of; false: others."
    ),
    image_type: ImageType | None = Query(default=None, description="Only this answered type."),
    color: ColorFilter | None = Query(
        default=None, description="Only this answered color; `none`: only images without one."
    ),
    fixed: bool | None = Query(
        default=None, description="true: only images with a fix in effect; false: not fixed."
    ),
    fixed_by: str | None = Query(
        default=None, min_length=1, max_length=128, description="Only fixes by this key name."
    ),
    order: inventory.Order = Query(
        default="confidence",
        description="confidence: unsure and unfixed first, least confident first; "
        "recent: last named first.",
    ),
    page: int = Query(default=1, ge=1, le=MAX_PAGE),
    limit: int = Query(default=60, ge=1, le=inventory.MAX_LIMIT),
) -> AdvertiserImagesOut:
    """The advertiser's images as a classify would answer them now, filtered and paged.

    An advertiser's images are those its classify requests and jobs named, and those
    fixed in its name. Answers apply its overrides, the global fixes and the model, in
    that order (a scraper's color is not stored, so it plays no part). A key scoped to
    other advertisers gets 403.
    """
    principal.require_advertiser(advertiser_id)
    filters = inventory.ImageFilter(
        low_confidence=low_confidence,
        image_type=image_type,
        color=color,
        fixed=fixed,
        fixed_by=fixed_by,
        order=order,
    )
    return list_images(state, advertiser_id, filters, page, limit)
