"""Bodies of manual fixes and their audit: /v1/images/{key}/fix, .../history, /v1/conflicts."""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationInfo,
    field_validator,
)

from cartag.api.schemas.classify import ResultOut
from cartag.api.schemas.common import ID_FIELD, NoNul
from cartag.vocab import COLORS, IMAGE_TYPES, Color, ImageType, normalize_color

Comment = Annotated[str, StringConstraints(max_length=2000), NoNul]
Name = Annotated[str, StringConstraints(min_length=1, max_length=128), NoNul]


def strict_label(value: object, vocabulary: tuple[str, ...], what: str) -> object:
    """A fix's (or a reviewer's relabel's) label exactly as the vocabulary spells it;
    anything else is a ValueError.

    A fix is a person's decision, so nothing is guessed: ``red``, ``Silver`` or ``gray``
    are refused (a 422 naming the field) with the vocabulary and, where one is close,
    the exact name to send.
    """
    if not isinstance(value, str) or value in vocabulary:
        return value
    hint = ""
    near = [v for v in vocabulary if v.lower() == value.strip().lower()]
    if not near and what == "color":
        try:
            near = [c for c in [normalize_color(value)] if c]
        except ValueError:
            near = []
    if near:
        hint = f" (did you mean {near[0]!r}?)"
    raise ValueError(f"unknown {what} {value!r}{hint}; send exactly one of {', '.join(vocabulary)}")


class FixIn(BaseModel):
    """Body of PUT /v1/images/{image_key}/fix: image_type, color or both.

    Who made the fix is the API key (a browser: its login session), never a field of the
    body; a panel acting for a person may name them in ``on_behalf_of``.
    """

    model_config = ConfigDict(
        extra="forbid",
        # The rules the validators and apply_fix enforce, stated in the schema: a fix
        # changes something; a Placeholder gets no color; user (deprecated) and
        # on_behalf_of are the same thing, so at most one is sent.
        json_schema_extra={
            "anyOf": [
                {"required": [name], "properties": {name: {"type": "string"}}}
                for name in ("image_type", "color")
            ],
            "allOf": [
                {
                    "not": {
                        "required": ["image_type", "color"],
                        "properties": {
                            "image_type": {"const": "Placeholder"},
                            "color": {"type": "string"},
                        },
                    }
                },
                {"not": {"required": ["user", "on_behalf_of"]}},
            ],
        },
    )

    advertiser_id: str = ID_FIELD
    image_type: ImageType | None = Field(
        default=None, description="Exactly Dealer, Stock or Placeholder (case matters)."
    )
    color: Color | None = Field(
        default=None,
        description="Exactly a vocabulary color (case matters; no aliases). "
        "Not with image_type Placeholder, nor for an image that is a Placeholder here.",
    )
    scope: Literal["global", "advertiser"]
    comment: Comment | None = None
    on_behalf_of: Name | None = Field(
        default=None,
        description="Free text: the person a panel acts for (recorded as said; who made "
        "the fix is the API key).",
    )
    user: Name | None = Field(
        default=None,
        # Marked in the schema only: pydantic's deprecated= warns on every read.
        json_schema_extra={"deprecated": True},
        description="Deprecated: read as on_behalf_of. Who made the fix is the API key.",
    )

    @field_validator("image_type", mode="before")
    @classmethod
    def _type(cls, value: object) -> object:
        return strict_label(value, IMAGE_TYPES, "image type")

    @field_validator("color", mode="before")
    @classmethod
    def _color(cls, value: object) -> object:
        return strict_label(value, COLORS, "color")

    @field_validator("color")
    @classmethod
    def _no_placeholder_color(cls, value: str | None, info: ValidationInfo) -> str | None:
        # image_type is declared (so validated) before color.
        if value is not None and info.data.get("image_type") == "Placeholder":
            raise ValueError("a Placeholder has no color: send image_type Placeholder alone")
        return value

    @field_validator("user")
    @classmethod
    def _one_behalf(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is not None and info.data.get("on_behalf_of") is not None:
            raise ValueError("user is deprecated and read as on_behalf_of: send on_behalf_of only")
        return value

    @property
    def behalf(self) -> str | None:
        """The free-text ``on_behalf_of`` (or the deprecated ``user``)."""
        return self.on_behalf_of or self.user


class AuditOut(BaseModel):
    id: int
    image_key: str
    advertiser_id: str
    scope: str
    user: str = Field(description="Who made the fix: the API key's name.")
    on_behalf_of: str | None = Field(
        default=None, description="Free text a panel sent: the person it acted for."
    )
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
    total: int = Field(description="Images whose fixes disagree, over all pages.")
    limit: int = Field(description="Images a page.")
    offset: int = Field(description="Images skipped before this page's first.")
    page: int = Field(description="The page (1-based) this one's first image is on.")
    pages: int = Field(description="Pages the conflicting images fill (at least 1).")
    items: list[ConflictOut] = Field(description="This page's images, most recently fixed first.")
