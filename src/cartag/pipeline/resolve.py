"""Resolve one stored image into a classify answer: model, fixes, scraper color.

Resolution order, field by field: this advertiser's override, then the global
fix, then (color only) the scraper's color, then the model.
"""

from __future__ import annotations

from typing import Protocol

from cartag.errors import NotFoundError
from cartag.pipeline.results import ClassifyResult, Source, overall_source
from cartag.settings import DEFAULT_LOW_CONFIDENCE_THRESHOLD
from cartag.store import fixes as fix_repo
from cartag.store import images as image_repo
from cartag.store.db import Database
from cartag.store.tables import FixRow
from cartag.vocab import read_stored_color


class StoredAnswer(Protocol):
    """What resolving needs of a stored image: an ImageRow, or a cached lookup of one."""

    @property
    def image_key(self) -> str: ...
    @property
    def image_type(self) -> str | None: ...
    @property
    def color(self) -> str | None: ...
    @property
    def confidence(self) -> float | None: ...
    @property
    def model_version(self) -> str | None: ...
    @property
    def color_reason(self) -> str | None: ...


def resolve(
    row: StoredAnswer,
    labels: fix_repo.FixLabels | None,
    scrape_color: str | None,
    url: str,
    fresh: bool,
    *,
    low_confidence_threshold: float = DEFAULT_LOW_CONFIDENCE_THRESHOLD,
) -> ClassifyResult:
    """Combine the model's answer, the fixes and the scraper's color into one result.

    Field by field: advertiser override, then global fix, then (color only) the
    scraper's color, then the model. A Placeholder never has a color.
    ``low_confidence`` is set when the model (not a person) decided the type and
    its stored confidence is below ``low_confidence_threshold``.
    """
    base: Source = "model" if fresh else "cache"
    image_type, type_source = row.image_type, base
    color, color_source = read_stored_color(row.color), base
    if scrape_color is not None:
        color, color_source = scrape_color, "scrape"
    if labels is not None:
        layers: tuple[tuple[FixRow | None, Source], ...] = (
            (labels.global_fix, "fix"),
            (labels.override, "override"),
        )
        for fix, source in layers:
            if fix is None:
                continue
            if fix.image_type is not None:
                image_type, type_source = fix.image_type, source
            if fix.color is not None:
                color, color_source = fix.color, source
    color_src: Source | None = color_source
    if image_type == "Placeholder":
        color, color_src = None, None
    low_confidence = (
        type_source == base
        and row.confidence is not None
        and row.confidence < low_confidence_threshold
    )
    # The stored reason explains only the machine's own null color.
    color_reason = row.color_reason if color is None and color_src == base else None
    return ClassifyResult(
        url=url,
        image_key=row.image_key,
        status="classified" if fresh else "cached",
        image_type=image_type,
        color=color,
        source=overall_source(type_source, color_src),
        type_source=type_source,
        color_source=color_src,
        confidence=row.confidence,
        model_version=row.model_version,
        color_reason=color_reason,
        low_confidence=low_confidence,
    )


def current_answer(
    db: Database,
    advertiser_id: str,
    image_key: str,
    *,
    max_distance: int = 0,
    low_confidence_threshold: float = DEFAULT_LOW_CONFIDENCE_THRESHOLD,
) -> ClassifyResult:
    """What a classify would answer now for a stored image, for this advertiser.

    Raises:
        NotFoundError: No image has this key.
    """
    with db.read() as session:
        row = image_repo.get_images(session, [image_key]).get(image_key)
        if row is None:
            raise NotFoundError(f"no image with key {image_key!r}")
        labels = fix_repo.find_fixes(
            session, advertiser_id, [(image_key, row.phash)], max_distance=max_distance
        )
    return resolve(
        row,
        labels.get(image_key),
        None,
        row.url,
        fresh=False,
        low_confidence_threshold=low_confidence_threshold,
    )
