"""Request and response bodies of the HTTP API (pydantic models)."""

from __future__ import annotations

import datetime as dt
from typing import Any, Final, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from cartag.vocab import (
    COLORS,
    UNKNOWN_SCRAPE_COLOR,
    Color,
    ImageType,
    normalize_color,
    normalize_image_type,
)

ColorName = Color
SourceName = Literal["model", "cache", "fix", "override", "scrape"]

_ID = Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9._:@/-]+$")
# Largest id / offset a request may name. Past 2**63 - 1 the database driver raises (a
# 500); this bound is lower, the largest integer JSON numbers (JavaScript, and the float
# that JSON Schema tools compare with) hold exactly, so the schema states it exactly.
MAX_ID: Final[int] = 2**53 - 1


class ProblemOut(BaseModel):
    field: str
    message: str


class ErrorDetailOut(BaseModel):
    code: str = Field(description="Machine-readable, e.g. invalid_input, not_found.")
    message: str = Field(description="What is wrong and how to fix it.")
    field: str | None = Field(
        default=None, description="The offending request field (dotted path), if one is."
    )
    problems: list[ProblemOut] | None = Field(
        default=None, description="Every invalid field (422 invalid_input only)."
    )


class ErrorOut(BaseModel):
    """The body of every error answer."""

    error: ErrorDetailOut


# ErrorOut in the OpenAPI components (the JSON routes' error_responses put it there).
ERROR_SCHEMA_REF: Final[str] = "#/components/schemas/ErrorOut"


_ERROR_DESCRIPTIONS: Final[dict[int, str]] = {
    400: "The body is not JSON in UTF-8 (http_error).",
    401: "No API key, or an unknown or revoked one (unauthorized).",
    403: "The API key lacks the role (forbidden).",
    404: "Not found.",
    409: "The object's state forbids the operation (conflict).",
    413: "The request body is over the size limit (body_too_large): CARTAG_MAX_BODY_BYTES, "
    "CARTAG_MAX_JOB_BODY_BYTES for POST /v1/jobs.",
    422: "A request field is invalid (invalid_input); field names it.",
    503: "The model or the store is unavailable; try again later.",
}


def error_responses(*codes: int, html_route: bool = False) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` documenting the error answers ``codes`` with :class:`ErrorOut`.

    Args:
        codes: HTTP statuses.
        html_route: The route answers HTML (``response_class=HTMLResponse``): FastAPI would
            put the model under text/html, where the JSON errors are not.
    """
    if html_route:
        return {
            code: {
                "description": _ERROR_DESCRIPTIONS[code],
                "content": {"application/json": {"schema": {"$ref": ERROR_SCHEMA_REF}}},
            }
            for code in codes
        }
    return {code: {"model": ErrorOut, "description": _ERROR_DESCRIPTIONS[code]} for code in codes}


def _color_or_none(value: object) -> object:
    if value is None or not isinstance(value, str):
        return value
    return normalize_color(value)  # ValueError -> 422 naming the field


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


class ClassifyIn(BaseModel):
    """Body of POST /v1/classify."""

    model_config = ConfigDict(extra="forbid")

    advertiser_id: str = _ID
    images: list[ImageIn] = Field(min_length=1)


class JobIn(ClassifyIn):
    """Body of POST /v1/jobs: a classify request plus an optional completion callback."""

    callback_url: str | None = Field(
        default=None,
        max_length=2048,
        pattern=r"^[Hh][Tt][Tt][Pp][Ss]?://[^/?#\s]+",
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
    advertiser_id: str
    results: list[ResultOut]
    counts: dict[str, int] = Field(description="Results by status.")


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
