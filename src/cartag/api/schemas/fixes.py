"""Bodies of manual fixes and their audit: /v1/images/{key}/fix, .../history, /v1/conflicts."""

from __future__ import annotations

import datetime as dt
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from cartag.api.schemas.classify import ResultOut
from cartag.api.schemas.common import ID_FIELD, ColorName, color_or_none
from cartag.vocab import ImageType, normalize_image_type


class FixIn(BaseModel):
    """Body of PUT /v1/images/{image_key}/fix: image_type, color or both."""

    model_config = ConfigDict(
        extra="forbid",
        # The rule apply_fix enforces, stated in the schema: a fix changes something.
        json_schema_extra={
            "anyOf": [
                {"required": [name], "properties": {name: {"type": "string"}}}
                for name in ("image_type", "color")
            ]
        },
    )

    advertiser_id: str = ID_FIELD
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
        return color_or_none(value)


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
