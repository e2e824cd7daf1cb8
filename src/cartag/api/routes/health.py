"""Liveness (/healthz), readiness (/readyz) and what is being served.

``/healthz`` answers 200 while the process serves requests, whatever the state of the
store: restarting a server does not free a disk. It reports the store's last known state
(``status: degraded`` with the problem) and starts a write probe in the background when
that state is stale, so it never waits on the database. It also says which model serves,
which one ``production`` names and, when they differ (production cannot load here), why:
still 200, since the server answers and a broken production folder would otherwise take
every server out of rotation at once. It lists the re-classifications with the production
model asked for and not finished (``reclassify_incomplete``; see
:mod:`cartag.store.reclassify_requests`): still 200. ``/readyz`` runs the write probe
(a committed no-op write to the database and a file written in the data dir) and answers
503 ``storage_unavailable`` when the store cannot take writes.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from cartag import __version__
from cartag.api.deps import StateDep
from cartag.api.errors import error_response
from cartag.api.schemas.common import error_responses
from cartag.api.schemas.health import HealthOut, ReadyOut, ReclassifyPendingOut, StorageOut
from cartag.errors import StorageError
from cartag.store import reclassify_requests
from cartag.store.health import FAILED, ping, storage_problem

router = APIRouter(tags=["health"])

# /healthz starts a background probe when the last result is older than this.
HEALTHZ_PROBE_AGE_S = 10.0


@router.get("/healthz", response_model=HealthOut)
def healthz(state: StateDep) -> HealthOut:
    """Liveness: 200 while the process serves; ``status`` says whether the store is usable."""
    storage = state.storage
    pending: list[ReclassifyPendingOut] = []
    if storage is not None:
        storage.refresh_soon(HEALTHZ_PROBE_AGE_S)
        try:
            with state.db.read() as session:
                ping(session)
                pending = [
                    ReclassifyPendingOut.model_validate(row, from_attributes=True)
                    for row in reclassify_requests.incomplete(session)
                ]
        except Exception as exc:  # noqa: BLE001 - reported in the body, never a 500
            storage.failed(storage_problem(exc) or FAILED)
        known = storage.state().to_dict()
    else:
        known = {"ok": True, "problem": None, "checked_at": None}
    watcher = state.watcher
    return HealthOut(
        status="ok" if known["ok"] else "degraded",
        version=__version__,
        model_version=state.service.classifier.version,
        production_version=None if watcher is None else watcher.wanted,
        fallback=watcher is not None and watcher.fallback,
        fallback_reason=None if watcher is None else watcher.fallback_reason,
        backbone=state.service.classifier.backbone_id,
        database=state.db.dialect,
        storage=StorageOut.model_validate(known),
        reclassify_incomplete=pending,
    )


@router.get(
    "/readyz",
    response_model=ReadyOut,
    responses=error_responses(503),
)
def readyz(state: StateDep) -> Any:
    """Readiness: 200 when the database and the data dir take a write, else 503."""
    if state.storage is None:
        return ReadyOut(status="ready", storage=StorageOut(ok=True, problem=None, checked_at=None))
    checked = state.storage.check()
    if not checked.ok:
        response: JSONResponse = error_response(
            StorageError(f"storage unavailable: {checked.problem}"), {"Retry-After": "30"}
        )
        return response
    return ReadyOut(status="ready", storage=StorageOut.model_validate(checked.to_dict()))
