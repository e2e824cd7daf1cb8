"""Bodies of the model registry API: /v1/models."""

from __future__ import annotations

import datetime as dt
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool

from cartag.vocab import ADVERTISER_ID_MAX, ADVERTISER_ID_PATTERN

# The aliases of cartag.store.model_versions.ALIASES (check_alias), stated in the schema.
Alias = Literal["production", "candidate"]


class VersionOut(BaseModel):
    version: str
    status: str
    created_at: dt.datetime
    created_by: str
    dataset_ref: str | None
    files_sha256: str
    aliases: list[str]
    metrics: dict[str, Any]
    card: dict[str, Any] | None = None


class ModelsOut(BaseModel):
    serving: str = Field(description="The model version this server answers with now.")
    aliases: dict[str, str]
    versions: list[VersionOut]


class DeploymentOut(BaseModel):
    alias: str
    version: str
    started_at: dt.datetime
    ended_at: dt.datetime | None
    by: str
    reason: str


class PromoteIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    alias: Alias = "production"
    force: StrictBool = Field(default=False, description="Skip the promotion gates.")


class RollbackIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    alias: Alias = "production"


class DeployOut(BaseModel):
    deployment: DeploymentOut
    serving: str = Field(description="The version this server answers with after the reload.")
    reclassify: str = Field(
        description="started | off | no opted-in advertisers | superseded (production moved "
        "again before it started: that deployment's re-classification follows it)"
    )
    refused: str | None = Field(
        default=None, description="Why this server could not switch to the version, if so."
    )


class ReclassifyIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    advertiser_id: str | None = Field(
        default=None, min_length=1, max_length=ADVERTISER_ID_MAX, pattern=ADVERTISER_ID_PATTERN
    )
