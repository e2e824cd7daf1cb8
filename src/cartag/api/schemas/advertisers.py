"""Bodies of /v1/advertisers: advertisers with their counts, settings, and their images."""

from __future__ import annotations

import datetime as dt
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, field_validator, model_validator
from pydantic.json_schema import SkipJsonSchema

from cartag.api.schemas.common import SourceName
from cartag.vocab import Color

# A color filter: a vocabulary color, or "none" (images without one). One Literal (a
# nested Literal flattens), so that a wrong value is an error of the field itself.
ColorFilter = Literal[Color, "none"]


class AdvertiserIn(BaseModel):
    """Settings to change; a field left out keeps its value (at least one is needed)."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"minProperties": 1})

    # Left out: kept; null is no value here (SkipJsonSchema keeps it out of the schema).
    reclassify_on_promote: StrictBool | SkipJsonSchema[None] = Field(
        default=None, description="Re-classify its images after each promotion."
    )
    adapt_answers: StrictBool | None = Field(
        default=None,
        description="Adapt its answers to its fixes (source advertiser_model): true or false; "
        "null: follow the deployment's CARTAG_ADVERTISER_ADAPTATION.",
    )

    # Before the type check: a wrong value of a "bool or null" field is otherwise reported
    # once per member of the union, under names such as reclassify_on_promote.bool.
    @field_validator("reclassify_on_promote", mode="before")
    @classmethod
    def _true_or_false(cls, value: object) -> object:
        if not isinstance(value, bool):
            raise ValueError(f"must be true or false, not {value!r}")
        return value

    @field_validator("adapt_answers", mode="before")
    @classmethod
    def _true_false_or_null(cls, value: object) -> object:
        if value is not None and not isinstance(value, bool):
            raise ValueError(f"must be true, false or null, not {value!r}")
        return value

    @model_validator(mode="after")
    def _something(self) -> AdvertiserIn:
        if not self.model_fields_set:
            raise ValueError("give reclassify_on_promote, adapt_answers or both")
        return self


class AdvertiserOut(BaseModel):
    advertiser_id: str
    images: int = Field(description="Distinct images its requests, jobs and fixes named.")
    overrides: int = Field(description="Its own overrides (advertiser-scoped fixes) in effect.")
    last_seen_at: dt.datetime | None = Field(
        description="When a request last named one of its images (null: never)."
    )
    reclassify_on_promote: bool
    adapt_answers: bool | None = Field(
        default=None,
        description="Its own setting of answers adapted to its fixes (null: it follows the "
        "deployment's default).",
    )
    adapting: bool = Field(
        default=False,
        description="Whether its answers adapt to its fixes now (its setting, else the "
        "deployment's CARTAG_ADVERTISER_ADAPTATION).",
    )
    updated_at: dt.datetime | None = Field(
        description="When its settings last changed (null: it has none)."
    )


class AdvertisersOut(BaseModel):
    total: int = Field(description="Advertisers whose id holds the search, over all pages.")
    page: int = Field(description="This page (1-based; a page past the end gives the last).")
    pages: int = Field(description="Pages the matching advertisers fill (at least 1).")
    limit: int
    q: str = Field(description="The search the ids hold (empty: none).")
    items: list[AdvertiserOut] = Field(description="This page's advertisers, by id.")


class AdvertiserImageOut(BaseModel):
    """One image of an advertiser, as a classify would answer it now for that advertiser."""

    image_key: str
    url: str = Field(description="As stored: a password in it is `***`.")
    thumbnail_url: str | None = Field(
        description="A small JPEG (GET /v1/images/{key}/thumbnail); null when none can be made."
    )
    thumbnail_unavailable: str | None = Field(
        description="Why there is no thumbnail_url: url_password (cartag keeps no password)."
    )
    image_type: str | None
    color: str | None
    source: SourceName | None
    type_source: SourceName | None
    color_source: SourceName | None
    confidence: float | None = Field(description="The model's confidence in its type.")
    model_version: str | None
    low_confidence: bool = Field(description="The model decided the type, unsure.")
    color_reason: str | None
    fixed: bool = Field(description="A fix or this advertiser's override applies.")
    fix_scope: Literal["override", "global"] | None = Field(
        description="Which fix is in effect: this advertiser's override, else the global one."
    )
    fixed_by: str | None = Field(description="Who made the fix in effect (an API key's name).")
    fixed_at: dt.datetime | None
    last_seen_at: dt.datetime | None = Field(
        description="When this advertiser's requests last named it (null: known from a fix)."
    )


class ImageCountsOut(BaseModel):
    images: int = Field(description="All of the advertiser's images, whatever the filter.")
    low_confidence: int = Field(description="Of those, answered with an unsure model type.")
    fixed: int = Field(description="Of those, with a fix or override in effect.")


class AdvertiserImagesOut(BaseModel):
    advertiser_id: str
    total: int = Field(description="Images matching the filter.")
    page: int = Field(description="This page (a page past the end is the last one).")
    pages: int
    limit: int
    counts: ImageCountsOut
    items: list[AdvertiserImageOut]
