"""Request and response bodies of the HTTP API (pydantic models)."""

from __future__ import annotations

import datetime as dt
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from cartag.vocab import Color, ImageType, normalize_color, normalize_image_type

ColorName = Color
SourceName = Literal["model", "cache", "fix", "override", "scrape"]

_ID = Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9._:@/-]+$")


def _color_or_none(value: object) -> object:
    if value is None or not isinstance(value, str):
        return value
    return normalize_color(value)  # ValueError -> 422 naming the field


class ImageIn(BaseModel):
    """One image of the inventory."""

    model_config = ConfigDict(extra="forbid")

    url: str = Field(min_length=1, max_length=2048, description="http(s) URL of the image.")
    scrape_color: ColorName | None = Field(
        default=None, description="Color the scraper read from the listing; wins over the model."
    )

    @field_validator("url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        lowered = value.strip().lower()
        if not (lowered.startswith("http://") or lowered.startswith("https://")):
            raise ValueError("url must start with http:// or https://")
        return value.strip()

    @field_validator("scrape_color", mode="before")
    @classmethod
    def _color(cls, value: object) -> object:
        return _color_or_none(value)


class ClassifyIn(BaseModel):
    """Body of POST /v1/classify."""

    model_config = ConfigDict(extra="forbid")

    advertiser_id: str = _ID
    images: list[ImageIn] = Field(min_length=1)


class JobIn(ClassifyIn):
    """Body of POST /v1/jobs: a classify request plus an optional completion callback."""

    callback_url: str | None = Field(default=None, max_length=2048)

    @field_validator("callback_url")
    @classmethod
    def _callback(cls, value: str | None) -> str | None:
        if value is not None and not value.lower().startswith(("http://", "https://")):
            raise ValueError("callback_url must start with http:// or https://")
        return value


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
        "color_provider_timeout or color_unmapped:<vendor label>.",
    )
    low_confidence: bool = Field(
        default=False,
        description="The model decided image_type with a calibrated confidence below the "
        "server's low_confidence_threshold: worth a human look. Always false when a fix or "
        "override decided the type.",
    )


class ClassifyOut(BaseModel):
    advertiser_id: str
    results: list[ResultOut]
    counts: dict[str, int] = Field(description="Results by status.")


class FixIn(BaseModel):
    """Body of PUT /v1/images/{image_key}/fix."""

    model_config = ConfigDict(extra="forbid")

    advertiser_id: str = _ID
    user: str = Field(min_length=1, max_length=128)
    image_type: ImageType | None = None
    color: ColorName | None = None
    scope: Literal["global", "advertiser"]
    comment: str | None = Field(default=None, max_length=2000)

    @field_validator("image_type", mode="before")
    @classmethod
    def _type(cls, value: object) -> object:
        if isinstance(value, str):
            return normalize_image_type(value)
        return value

    @field_validator("color", mode="before")
    @classmethod
    def _color(cls, value: object) -> object:
        return _color_or_none(value)


class AuditOut(BaseModel):
    id: int
    image_key: str
    advertiser_id: str
    scope: str
    user: str
    changes: dict[str, dict[str, str | None]]
    comment: str | None
    created_at: dt.datetime


class FixOut(BaseModel):
    audit: AuditOut
    result: ResultOut = Field(description="What a classify of this image now answers.")


class HistoryOut(BaseModel):
    image_key: str
    url: str
    model: dict[str, str | float | None]
    entries: list[AuditOut]


class ConflictLabelOut(BaseModel):
    scope: str
    advertiser_id: str | None
    image_type: str | None
    color: str | None
    updated_by: str
    updated_at: dt.datetime


class ConflictOut(BaseModel):
    image_key: str
    url: str
    fields: list[str]
    labels: list[ConflictLabelOut]


class ConflictsOut(BaseModel):
    total: int
    items: list[ConflictOut]


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
        default=None, description="Present once the job is done."
    )
