"""POST /v1/classify: an inventory in, one result per image out."""

from __future__ import annotations

from collections import Counter

from fastapi import APIRouter, Response
from pydantic_core import to_json

from cartag.api.deps import ClassifierDep, StateDep
from cartag.api.schemas.classify import ClassifyIn, ClassifyOut
from cartag.api.schemas.common import error_responses
from cartag.errors import InputError
from cartag.pipeline.results import ImageRequest

router = APIRouter(prefix="/v1", tags=["classify"])


@router.post(
    "/classify",
    response_model=ClassifyOut,
    responses=error_responses(400, 401, 403, 413, 422, 503),
)
async def classify(body: ClassifyIn, state: StateDep, principal: ClassifierDep) -> Response:
    """Classify up to ``CARTAG_MAX_IMAGES_PER_REQUEST`` images (default 1,000), in order.

    Unchanged images are answered from the cache after a conditional request;
    an image that can't be fetched or decoded is ``skipped`` with a ``reason``.
    A key scoped to advertisers classifies for them only (403 otherwise).
    """
    principal.require_advertiser(body.advertiser_id)
    limit = state.settings.max_images_per_request
    if len(body.images) > limit:
        raise InputError(
            f"{len(body.images)} images in one request; the limit is {limit}. "
            "Split the inventory or submit it as a job with POST /v1/jobs.",
            field="images",
        )
    requests = [ImageRequest(i.url, i.scrape_color) for i in body.images]
    results = await state.service.classify(body.advertiser_id, requests)
    # The results are built by the pipeline to ClassifyOut's shape (tests check it):
    # serialised directly, without a pydantic model per result, which cost more than
    # the rest of a cached 1,000-image answer.
    content = to_json(
        {
            "advertiser_id": body.advertiser_id,
            "results": [r.to_dict() for r in results],
            "counts": dict(Counter(r.status for r in results)),
        }
    )
    return Response(content=content, media_type="application/json")
