"""Bodies of the health answers: /healthz and /readyz."""

from __future__ import annotations

import datetime as dt

from pydantic import BaseModel, Field


class StorageOut(BaseModel):
    ok: bool
    problem: str | None = Field(description="What is wrong with the store (None when ok).")
    checked_at: str | None = Field(description="When this was learnt (ISO 8601, UTC).")


class ReclassifyPendingOut(BaseModel):
    version: str = Field(description="The production model whose answers are due.")
    advertiser_id: str | None = Field(
        description="The advertiser it covers; null: every advertiser that opted in."
    )
    requested_at: dt.datetime
    requested_by: str
    progress_at: dt.datetime | None = Field(
        description="When a run last saved a chunk of its answers or said it was alive "
        "(null: none yet)."
    )
    error: str | None = Field(description="Why its last run stopped, when it failed.")


class HealthOut(BaseModel):
    status: str = Field(
        description="ok, or degraded when the store has a problem. A model fallback does not "
        "change it (see `fallback`)."
    )
    version: str
    model_version: str = Field(description="The model version answering classify calls.")
    production_version: str | None = Field(
        default=None,
        description="The version the registry's `production` alias names, as this server last "
        "read it (it polls every CARTAG_MODEL_POLL_S seconds); null when not known.",
    )
    fallback: bool = Field(
        default=False,
        description="true while this server answers with another model than production's, "
        "because production cannot load here (see `fallback_reason`). The answer stays 200: "
        "the server works; alert on this field or on the cartag_model_fallback metric.",
    )
    fallback_reason: str | None = Field(
        default=None,
        description="Why production is not served, in one line (null without a fallback).",
    )
    backbone: str | None = Field(
        default=None,
        description="The backbone being served: `<id>+int8@<ranges digest>` when the int8 "
        "backbone is, the fp32 id when fp32 is (CARTAG_PRECISION=fp32, or int8 unusable here: "
        "the log says why); null for a model without one.",
    )
    database: str
    storage: StorageOut
    reclassify_incomplete: list[ReclassifyPendingOut] = Field(
        default_factory=list,
        description="Re-classifications with the production model asked for and not finished "
        "(running, or cut off: a server stopped mid-way); until one finishes, the images "
        "it has not reached keep an earlier model's answers. `cartag models reclassify` "
        "finishes them. Empty when all are done (or the store cannot be read).",
    )


class ReadyOut(BaseModel):
    status: str = Field(description="ready")
    storage: StorageOut
