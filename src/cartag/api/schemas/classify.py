"""Bodies of classify calls and jobs: POST /v1/classify, /v1/jobs, GET /v1/jobs/{id}."""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    JsonValue,
    StringConstraints,
    field_validator,
)

from cartag.api.schemas.common import ID_FIELD, ColorName, NoNul, SourceName
from cartag.vocab import COLORS, UNKNOWN_SCRAPE_COLOR, ImageType

CallbackUrl = Annotated[
    str, StringConstraints(max_length=2048, pattern=r"^[Hh][Tt][Tt][Pp][Ss]?://[^/?#\s]+"), NoNul
]


class ImageIn(BaseModel):
    """One image of the inventory."""

    model_config = ConfigDict(extra="forbid")

    # A bad URL or color is this image's problem, not the request's: no 422 for it.
    url: str = Field(
        description="http(s) URL of the image, at most 2,048 characters. Any other string "
        "gets this image a skipped result: reason invalid_url (not an absolute http(s) URL "
        "with a host) or url_too_long."
    )
    scrape_color: str | None = Field(
        default=None,
        description=f"Color the scraper read from the listing; wins over the model. One of "
        f"{', '.join(COLORS)} in any case, or an alias (silver, gray, maroon, ...); N/A, none, "
        f"unknown or null: no color. Anything else is ignored and the result says "
        f"color_reason {UNKNOWN_SCRAPE_COLOR}.",
    )

    @field_validator("url")
    @classmethod
    def _strip(cls, value: str) -> str:
        return value.strip()


# Image keys as the service makes them (imaging.keys): validators key, 64 hex digits.
_EXAMPLE_KEYS = ("v1:" + "3b1f0c9e5d2a7c4b" * 4, "v1:" + "9a8b7c6d5e4f3a2b" * 4)
_EXAMPLE_IMAGES: list[JsonValue] = [
    {"url": "https://cdn.dealer-42.example/stock/4711/front.jpg"},
    {"url": "https://cdn.dealer-42.example/stock/4711/side.jpg", "scrape_color": "silver"},
    {"url": "https://cdn.dealer-42.example/placeholders/coming-soon.png"},
]


class ClassifyIn(BaseModel):
    """Body of POST /v1/classify."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{"advertiser_id": "dealer-42", "images": _EXAMPLE_IMAGES}]},
    )

    advertiser_id: str = ID_FIELD
    images: list[ImageIn] = Field(min_length=1)


class JobIn(ClassifyIn):
    """Body of POST /v1/jobs: a classify request plus an optional completion callback."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "advertiser_id": "dealer-42",
                    "images": _EXAMPLE_IMAGES,
                    "callback_url": "https://backend.marketplace.example/hooks/cartag",
                }
            ]
        },
    )

    callback_url: CallbackUrl | None = Field(
        default=None,
        description="http(s) URL that gets a POST with the job's outcome once it is done.",
    )


class ResultOut(BaseModel):
    """The answer for one image, in request order."""

    url: str
    image_key: str | None
    status: Literal["classified", "cached", "skipped"]
    image_type: ImageType | None
    color: ColorName | None
    source: SourceName | None
    type_source: SourceName | None
    color_source: SourceName | None
    confidence: float | None
    reason: str | None
    model_version: str | None
    color_reason: str | None = Field(
        default=None,
        description="Why color is null when the color provider failed, e.g. "
        "color_provider_timeout or color_unmapped:<vendor label>; else "
        f"{UNKNOWN_SCRAPE_COLOR} when the request's scrape_color was not a known color "
        "(it was ignored).",
    )
    low_confidence: bool = Field(
        default=False,
        description="The model decided image_type with a calibrated confidence below the "
        "server's low_confidence_threshold: worth a human look. Always false when a fix or "
        "override decided the type.",
    )


class ClassifyOut(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "advertiser_id": "dealer-42",
                    "results": [
                        {
                            "url": "https://cdn.dealer-42.example/stock/4711/front.jpg",
                            "image_key": _EXAMPLE_KEYS[0],
                            "status": "classified",
                            "image_type": "Dealer",
                            "color": "Blue",
                            "source": "model",
                            "type_source": "model",
                            "color_source": "model",
                            "confidence": 0.987,
                            "reason": None,
                            "model_version": "bundled-2026.12.06-f689eff0",
                            "color_reason": None,
                            "low_confidence": False,
                        },
                        {
                            "url": "https://cdn.dealer-42.example/stock/4711/side.jpg",
                            "image_key": _EXAMPLE_KEYS[1],
                            "status": "cached",
                            "image_type": "Dealer",
                            "color": "Grey",
                            "source": "scrape",
                            "type_source": "cache",
                            "color_source": "scrape",
                            "confidence": 0.951,
                            "reason": None,
                            "model_version": "bundled-2026.12.06-f689eff0",
                            "color_reason": None,
                            "low_confidence": False,
                        },
                        {
                            "url": "https://cdn.dealer-42.example/placeholders/coming-soon.png",
                            "image_key": None,
                            "status": "skipped",
                            "image_type": None,
                            "color": None,
                            "source": None,
                            "type_source": None,
                            "color_source": None,
                            "confidence": None,
                            "reason": "http_404",
                            "model_version": None,
                            "color_reason": None,
                            "low_confidence": False,
                        },
                    ],
                    "counts": {"classified": 1, "cached": 1, "skipped": 1},
                }
            ]
        }
    )

    advertiser_id: str
    results: list[ResultOut]
    counts: dict[str, int] = Field(description="Results by status.")


class JobOut(BaseModel):
    id: str
    advertiser_id: str
    status: Literal["queued", "running", "done", "failed"]
    total: int
    done: int
    progress: float
    callback_url: str | None
    callback_status: str | None
    error: str | None
    created_at: dt.datetime
    started_at: dt.datetime | None
    finished_at: dt.datetime | None
    results: list[ResultOut] | None = Field(
        default=None,
        description="Present once the job has finished: every item's result when it is "
        "done; when it failed (or was cancelled), those stored before it stopped.",
    )


class JobListOut(BaseModel):
    jobs: list[JobOut] = Field(description="Newest first; without their results.")
    total: int = Field(description="Jobs that match, over all pages.")
    limit: int = Field(description="Jobs a page.")
    offset: int = Field(description="Jobs skipped before this page's first.")
    page: int = Field(description="The page (1-based) this one's first job is on.")
    pages: int = Field(description="Pages the matching jobs fill (at least 1).")
