"""GET /metrics: the app's Prometheus metrics (text exposition format).

Unauthenticated by default, as Prometheus scrapers expect; with
``CARTAG_METRICS_REQUIRE_KEY=true`` it needs ``Authorization: Bearer <key>`` (any role).
"""

from __future__ import annotations

from fastapi import APIRouter, Request, Response

from cartag.api.deps import StateDep
from cartag.clock import Clock
from cartag.errors import AuthError, NotFoundError
from cartag.store import apikeys
from cartag.store import jobs as job_repo
from cartag.store.db import Database
from cartag.telemetry.prometheus import PrometheusTelemetry

router = APIRouter(tags=["operations"])


def job_queue_depth(db: Database) -> dict[str, float]:
    """Jobs waiting to run, and images of unfinished jobs not yet classified.

    Two indexed aggregate reads, run at scrape time.
    """
    with db.read() as session:
        queued, pending = job_repo.queue_depth(session)
    return {"jobs": float(queued), "job_images": float(pending)}


def job_queue_age(db: Database, clock: Clock) -> dict[str, float]:
    """Seconds the oldest queued job has waited to start (0 when none waits): a stuck queue."""
    with db.read() as session:
        oldest = job_repo.oldest_queued(session)
    waited = (clock.now() - oldest).total_seconds() if oldest is not None else 0.0
    return {"jobs": max(0.0, waited)}


def _check_key(request: Request, state: StateDep) -> None:
    scheme, _, key = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not key.strip():
        raise AuthError(
            "/metrics needs an API key (CARTAG_METRICS_REQUIRE_KEY is on); "
            "send 'Authorization: Bearer <key>'"
        )
    with state.db.read() as session:
        apikeys.authenticate(session, key.strip())


@router.get("/metrics", include_in_schema=False)
def metrics(request: Request, state: StateDep) -> Response:
    """Prometheus metrics of this process (see cartag.telemetry.prometheus for the list)."""
    if state.settings.metrics_require_key:
        _check_key(request, state)
    telemetry = state.telemetry
    if not isinstance(telemetry, PrometheusTelemetry):
        raise NotFoundError("this app was built with a telemetry that keeps no metrics")
    body, content_type = telemetry.exposition()
    return Response(body, media_type=content_type)
