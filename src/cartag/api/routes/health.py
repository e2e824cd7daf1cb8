"""Liveness and what is being served."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from sqlalchemy import text

from cartag import __version__
from cartag.api.deps import StateDep

router = APIRouter(tags=["health"])


@router.get("/healthz")
def healthz(state: StateDep) -> dict[str, Any]:
    """200 when the database answers and a model is loaded."""
    with state.db.read() as session:
        session.execute(text("SELECT 1"))
    return {
        "status": "ok",
        "version": __version__,
        "model_version": state.service.classifier.version,
        "database": state.db.dialect,
    }
