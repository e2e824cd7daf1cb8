"""Bodies of the health answers: /healthz and /readyz."""

from __future__ import annotations

from pydantic import BaseModel, Field


class StorageOut(BaseModel):
    ok: bool
    problem: str | None = Field(description="What is wrong with the store (None when ok).")
    checked_at: str | None = Field(description="When this was learnt (ISO 8601, UTC).")


class HealthOut(BaseModel):
    status: str = Field(description="ok, or degraded when the store has a problem.")
    version: str
    model_version: str
    backbone: str | None = Field(
        default=None,
        description="The backbone being served: `<id>+int8@<ranges digest>` when the int8 "
        "backbone is, the fp32 id when fp32 is (CARTAG_PRECISION=fp32, or int8 unusable here: "
        "the log says why); null for a model without one.",
    )
    database: str
    storage: StorageOut


class ReadyOut(BaseModel):
    status: str = Field(description="ready")
    storage: StorageOut
