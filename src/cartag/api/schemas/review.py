"""Bodies of the dataset review API under /v1/datasets/{ref}/review."""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationInfo,
    field_validator,
)

from cartag.api.schemas.common import MAX_ID, NoNul
from cartag.api.schemas.fixes import strict_label
from cartag.vocab import COLORS, IMAGE_TYPES


class DecisionOut(BaseModel):
    id: int
    item_id: int
    action: str
    field: str
    from_label: str | None
    to_label: str | None
    user: str
    created_at: dt.datetime
    undone_at: dt.datetime | None
    undone_by: str | None


class ClaimOut(BaseModel):
    """What one source of a flagged item's conflict said."""

    who: str = Field(description="An advertiser, 'global fix (user)', 'this version'...")
    image_type: str | None
    color: str | None


class ItemOut(BaseModel):
    id: int
    content_sha256: str
    image_type: str | None
    color: str | None
    status: str
    reason: str | None
    split: str | None
    width: int | None
    height: int | None
    suspicion: float | None
    model_label: str | None
    model_confidence: float | None
    model_field: Literal["image_type", "color"] | None = Field(
        description="Which label the model's opinion is about."
    )
    provenance: dict[str, Any]
    thumb_url: str
    last_decision: DecisionOut | None
    decided: bool = Field(
        description="It has a decision (not undone) in the listing's queue: about that "
        "queue's label, or an exclusion; with no queue, any decision."
    )
    conflict: list[ClaimOut] = Field(
        description="A flagged item's sources and what each said (empty: none recorded)."
    )
    conflict_fields: list[Literal["image_type", "color"]] = Field(
        description="The labels the conflict is about (empty when not flagged)."
    )


class ProgressOut(BaseModel):
    queue: Literal["image_type", "color"] | None = Field(
        description="The queue; null: the whole version."
    )
    total: int = Field(description="Items of the queue a reviewer can act on.")
    done: int = Field(description="Those decided (decisions not undone).")
    undecided: int


class VersionOut(BaseModel):
    ref: str
    name: str
    number: int
    status: str


class ItemsOut(BaseModel):
    version: VersionOut
    total: int
    page: int = Field(description="The page of the first item listed (1-based).")
    offset: int = Field(description="How many matching items come before the first listed.")
    limit: int
    items: list[ItemOut]
    progress: ProgressOut


class DecisionIn(BaseModel):
    """Body of POST .../review/decisions: ``label`` with ``relabel``, and only then."""

    model_config = ConfigDict(
        extra="forbid",
        # The rule record_decision enforces, stated in the schema.
        json_schema_extra={
            "anyOf": [
                {
                    "required": ["action", "label"],
                    "properties": {
                        "action": {"const": "relabel"},
                        "field": {"const": "image_type"},
                        "label": {"enum": list(IMAGE_TYPES)},
                    },
                },
                {
                    "required": ["action", "field", "label"],
                    "properties": {
                        "action": {"const": "relabel"},
                        "field": {"const": "color"},
                        "label": {"enum": list(COLORS)},
                    },
                },
                {
                    "required": ["action"],
                    "properties": {
                        "action": {"enum": ["accept", "exclude"]},
                        "label": {"type": "null"},
                    },
                },
            ]
        },
    )

    # JSON's integers: 7 and 7.0 (JSON Schema's "integer" takes both); true or "7" is no item.
    item_id: int = Field(ge=1, le=MAX_ID)
    action: Literal["accept", "relabel", "exclude"]
    field: Literal["image_type", "color"] = "image_type"
    label: Annotated[str, StringConstraints(min_length=1, max_length=32), NoNul] | None = None

    @field_validator("item_id", mode="before")
    @classmethod
    def _json_integer(cls, value: object) -> object:
        if isinstance(value, bool | str):
            raise ValueError("an item id is a JSON integer, such as 7")
        return value

    @field_validator("label", mode="before")
    @classmethod
    def _exact(cls, value: object, info: ValidationInfo) -> object:
        # A relabel is a person's decision, as a fix is: "gray" or "red" is refused with
        # the exact name to send, never guessed.
        if info.data.get("field") == "color":
            return strict_label(value, COLORS, "color")
        return strict_label(value, IMAGE_TYPES, "image type")


class DecisionResult(BaseModel):
    decision: DecisionOut
    item: ItemOut
