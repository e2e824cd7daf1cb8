"""The classify result contract shared by the API, jobs and callbacks."""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any, Literal

from cartag.imaging.keys import echoable_url

Status = Literal["classified", "cached", "skipped"]
Source = Literal["model", "cache", "fix", "override", "scrape", "advertiser_model"]


@dataclass(frozen=True)
class ImageRequest:
    """One image of an inventory, as the scraper sends it."""

    url: str
    scrape_color: str | None = None


@dataclass(frozen=True)
class ClassifyResult:
    """The answer for one image.

    ``source`` names where the answer came from overall (the most specific of
    ``type_source`` and ``color_source``: override > fix > scrape > advertiser_model >
    cache > model). ``advertiser_model``: the model's answer adapted to this
    advertiser's fixes (:mod:`cartag.pipeline.adaptation`).
    """

    url: str
    image_key: str | None
    status: Status
    image_type: str | None = None
    color: str | None = None
    source: Source | None = None
    type_source: Source | None = None
    color_source: Source | None = None
    confidence: float | None = None
    reason: str | None = None
    model_version: str | None = None
    # Why ``color`` is null when the color provider failed (a Placeholder has none).
    color_reason: str | None = None
    # The model decided the image type with a confidence below
    # ``Settings.low_confidence_threshold``: worth a human look. Never set when a
    # fix or override decided the type.
    low_confidence: bool = False
    # The stored answer's novelty (cartag.models.reference), for the drift rollup only:
    # not part of the answer a client gets.
    novelty: float | None = field(default=None, compare=False)

    def to_dict(self) -> dict[str, Any]:
        # Every field is a scalar: a shallow copy equals asdict(), which deep-copies
        # each value and cost more than the rest of a cached answer.
        return {name: getattr(self, name) for name in _FIELDS}


_FIELDS = tuple(f.name for f in fields(ClassifyResult) if f.name != "novelty")

_PRECEDENCE: tuple[Source, ...] = (
    "override",
    "fix",
    "scrape",
    "advertiser_model",
    "cache",
    "model",
)


def overall_source(type_source: Source | None, color_source: Source | None) -> Source | None:
    """The most specific of two field sources."""
    present = {type_source, color_source}
    for source in _PRECEDENCE:
        if source in present:
            return source
    return None


def skipped(url: str, reason: str) -> ClassifyResult:
    """A skipped image's result; ``url`` as sent, but a lone surrogate (no character,
    ``imaging.keys.echoable_url``) that no answer could encode."""
    return ClassifyResult(url=echoable_url(url), image_key=None, status="skipped", reason=reason)
