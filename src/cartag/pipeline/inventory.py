"""An advertiser's images as cartag answers them now: the fix page's listing.

Each image of the advertiser (see :mod:`cartag.store.advertisers`) is resolved with the
one precedence rule of :mod:`cartag.pipeline.fixes` (this advertiser's override > global
fix > the model adapted to its fixes > the model), fixes found through the pHash
included, so the listing says exactly what the next classify of the image would answer.
The scraper's ``scrape_color`` is not stored (it comes with each request), so it plays
no part here.

The filters apply to the resolved answer; the default order puts what most needs a
person first: images the model was unsure of, least confident first, then the other
unfixed ones, then the fixed ones.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Final, Literal, NamedTuple

from cartag.pipeline.adaptation import Adapt, Adapted
from cartag.pipeline.fixes import FixLabels, decide, find_fixes, resolve
from cartag.pipeline.results import ClassifyResult
from cartag.settings import DEFAULT_LOW_CONFIDENCE_THRESHOLD
from cartag.store import advertisers as advertiser_repo
from cartag.store.advertisers import AdvertiserImage, ImageAnswer
from cartag.store.db import Database
from cartag.store.paging import clamped_page, page_count
from cartag.store.tables import FixRow
from cartag.vocab import read_stored_color

Order = Literal["confidence", "recent"]
MAX_LIMIT: Final[int] = 500


@dataclass(frozen=True)
class ImageFilter:
    """What to list; None means "any".

    Attributes:
        low_confidence: Only images whose answered type the model was unsure of (True),
            or only the others (False).
        image_type: Only this answered type.
        color: Only this answered color; ``"none"``: only images without one.
        fixed: Only images a fix or override applies to (True), or only unfixed ones.
        fixed_by: Only images whose fix in effect (override or global) was made by this
            user (an API key's name).
        order: ``confidence`` (default: unsure first) or ``recent`` (last named first).
    """

    low_confidence: bool | None = None
    image_type: str | None = None
    color: str | None = None
    fixed: bool | None = None
    fixed_by: str | None = None
    order: Order = "confidence"


@dataclass(frozen=True)
class Listed:
    """One image of the listing.

    Attributes:
        image: The stored image (the model's answer, when it was last named).
        answer: What a classify of it answers now for this advertiser.
        fix_scope: ``override`` (this advertiser's), ``global`` or None (not fixed).
        fixed_by: Who made the fix in effect (the override's author, else the global's).
        fixed_at: When that fix was made.
    """

    image: AdvertiserImage
    answer: ClassifyResult
    fix_scope: Literal["override", "global"] | None
    fixed_by: str | None
    fixed_at: dt.datetime | None

    @property
    def fixed(self) -> bool:
        return self.fix_scope is not None


@dataclass(frozen=True)
class Listing:
    """One page of an advertiser's images, and the counts over all of them.

    Attributes:
        advertiser_id: Whose images.
        total: How many images match the filter.
        page: The page number (1-based), clamped to the last page.
        limit: Images per page.
        items: This page's images.
        images: How many images the advertiser has (whatever the filter).
        low_confidence: How many of them the model was unsure of (and nobody fixed).
        fixed: How many of them a fix or override applies to.
    """

    advertiser_id: str
    total: int
    page: int
    limit: int
    items: list[Listed]
    images: int
    low_confidence: int
    fixed: int

    @property
    def pages(self) -> int:
        return page_count(self.total, self.limit)


def _listed(
    image: AdvertiserImage,
    labels: FixLabels | None,
    low_confidence_threshold: float,
    adapted: Adapted | None = None,
) -> Listed:
    answer = resolve(
        image,
        labels,
        None,
        image.url,
        fresh=False,
        low_confidence_threshold=low_confidence_threshold,
        adapted=adapted,
    )
    in_effect: FixRow | None = None
    scope: Literal["override", "global"] | None = None
    if labels is not None and labels.override is not None:
        in_effect, scope = labels.override, "override"
    elif labels is not None and labels.global_fix is not None:
        in_effect, scope = labels.global_fix, "global"
    return Listed(
        image=image,
        answer=answer,
        fix_scope=scope,
        fixed_by=in_effect.updated_by if in_effect is not None else None,
        fixed_at=in_effect.updated_at if in_effect is not None else None,
    )


class _Facts(NamedTuple):
    """What ordering, filtering and counting need of one image's answer (no URLs)."""

    row: ImageAnswer
    labels: FixLabels | None
    image_type: str | None
    color: str | None
    low_confidence: bool
    fixed: bool


def _facts(
    row: ImageAnswer,
    labels: FixLabels | None,
    adapted: Adapted | None,
    low_confidence_threshold: float,
    with_color: bool = True,
) -> _Facts:
    """One image's answered type and color, and whether it is unsure, as :func:`resolve`
    answers them (``tests/pipeline/test_inventory.py`` holds the two to each other).

    ``with_color=False``: the color of an image no fix or adapter touches is left None
    (no color filter asks for it; reading a stored color is a third of this function).
    """
    if labels is None and adapted is None:
        # Only the model's stored answer: the rule leaves it as it is (a Placeholder has
        # no color), and the model decided the type. Most images are such: building a
        # ClassifyResult for each of 50,000 was a fifth of a page's time.
        stored = read_stored_color(row.color) if with_color else None
        decided = decide((row.image_type, "cache"), (stored, "cache"), None)
        unsure = row.confidence is not None and row.confidence < low_confidence_threshold
        return _Facts(row, None, decided.image_type, decided.color, unsure, False)
    answer = resolve(
        row,
        labels,
        None,
        "",
        fresh=False,
        low_confidence_threshold=low_confidence_threshold,
        adapted=adapted,
    )
    fixed = labels is not None and (labels.override is not None or labels.global_fix is not None)
    return _Facts(row, labels, answer.image_type, answer.color, answer.low_confidence, fixed)


def _matches(item: _Facts, f: ImageFilter) -> bool:
    if f.low_confidence is not None and item.low_confidence != f.low_confidence:
        return False
    if f.image_type is not None and item.image_type != f.image_type:
        return False
    if f.color is not None and item.color != (None if f.color == "none" else f.color):
        return False
    if f.fixed is not None and item.fixed != f.fixed:
        return False
    if f.fixed_by is not None:
        labels = item.labels
        authors = (
            {fix.updated_by for fix in (labels.override, labels.global_fix) if fix is not None}
            if labels is not None
            else set()
        )
        if f.fixed_by not in authors:
            return False
    return True


def _sort_key(item: _Facts, order: Order) -> tuple[object, ...]:
    row = item.row
    if order == "recent":
        seen = row.last_seen_at or row.updated_at
        assert seen is not None  # read with_times for this order; updated_at is never null
        return (-seen.timestamp(), row.image_key)
    confidence = row.confidence if row.confidence is not None else 1.0
    return (not item.low_confidence, item.fixed, confidence, row.image_key)


def list_images(
    db: Database,
    advertiser_id: str,
    filters: ImageFilter,
    *,
    page: int = 1,
    limit: int = 60,
    max_distance: int = 0,
    low_confidence_threshold: float = DEFAULT_LOW_CONFIDENCE_THRESHOLD,
    adapt: Adapt | None = None,
) -> Listing:
    """One page of an advertiser's images as classify would answer them now.

    The order, the filters and the counts need every image's answer, but only the page's
    images are read whole and resolved into a :class:`Listed`: every image costs one row
    of its stored answer and its fixes (one read of the scopes' fixes when they are fewer
    than the images, see :func:`cartag.store.fixes.candidate_fixes`), and an advertiser
    whose answers adapt to its fixes also the adapter's pass over its embeddings.

    Args:
        db: The store.
        advertiser_id: Whose images (and whose overrides apply).
        filters: What to list, in which order.
        page: 1-based; a page past the end is the last page.
        limit: Images per page (at most :data:`MAX_LIMIT`).
        max_distance: ``CARTAG_PHASH_MAX_DISTANCE``: fixes of near-duplicates apply.
        low_confidence_threshold: ``CARTAG_LOW_CONFIDENCE_THRESHOLD``.
        adapt: The serving answers adapted to the advertiser's fixes
            (:meth:`cartag.pipeline.classify.ClassifyService.adapted`); None: none.

    Returns:
        The page, its total and the advertiser's counts.
    """
    limit = max(1, min(limit, MAX_LIMIT))
    with db.read() as session:
        rows = advertiser_repo.advertiser_answers(
            session, advertiser_id, with_times=filters.order == "recent"
        )
        labels = find_fixes(
            session,
            advertiser_id,
            [(row.image_key, row.phash) for row in rows],
            max_distance=max_distance,
        )
        adapted = adapt(session, advertiser_id, [r.image_key for r in rows]) if adapt else {}
        every = [
            _facts(
                row,
                labels.get(row.image_key),
                adapted.get(row.image_key),
                low_confidence_threshold,
                with_color=filters.color is not None,
            )
            for row in rows
        ]
        matching = [item for item in every if _matches(item, filters)]
        matching.sort(key=lambda item: _sort_key(item, filters.order))
        page, pages = clamped_page(len(matching), page, limit)
        shown = [item.row.image_key for item in matching[(page - 1) * limit : page * limit]]
        images = {
            image.image_key: image
            for image in advertiser_repo.advertiser_images(session, advertiser_id, shown)
        }
    return Listing(
        advertiser_id=advertiser_id,
        total=len(matching),
        page=page,
        limit=limit,
        # The page's images in the listing's order (the second read is the same rows).
        items=[
            _listed(images[key], labels.get(key), low_confidence_threshold, adapted.get(key))
            for key in shown
            if key in images
        ],
        images=len(every),
        low_confidence=sum(1 for item in every if item.low_confidence),
        fixed=sum(1 for item in every if item.fixed),
    )
