"""The model registry over HTTP: list versions, promote, roll back, re-classify.

Promotion and rollback are :mod:`cartag.deploy.promote`'s, as for ``cartag models
promote|rollback``; then the receiving server reloads at once (the others follow within
``CARTAG_MODEL_POLL_S``) and, as :mod:`cartag.deploy.followup` says, a background
re-classification of opted-in advertisers' images starts.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, status

from cartag.api.deps import PrincipalDep, StateDep, require
from cartag.api.schemas.common import error_responses
from cartag.api.schemas.models import (
    Alias,
    DeploymentOut,
    DeployOut,
    ModelsOut,
    PromoteIn,
    ReclassifyIn,
    RollbackIn,
    VersionOut,
)
from cartag.api.state import AppState
from cartag.deploy import followup, promote
from cartag.jobs.reclassify import (
    ReclassifySupersededError,
    reclassify,
    record_request,
    resume_stale,
)
from cartag.store import model_versions as repo
from cartag.store.apikeys import Principal
from cartag.store.tables import DeploymentRow, ModelVersionRow

log = logging.getLogger(__name__)

_ERRORS = error_responses(401, 403, 422, 503)
router = APIRouter(prefix="/v1/models", tags=["models"], responses=_ERRORS)

AdminDep = Annotated[Principal, Depends(require("admin"))]


def _version_out(
    row: ModelVersionRow, aliases: dict[str, list[str]], *, card: bool = False
) -> VersionOut:
    return VersionOut(
        version=row.version,
        status=row.status,
        created_at=row.created_at,
        created_by=row.created_by,
        dataset_ref=row.dataset_ref,
        files_sha256=row.files_sha256,
        aliases=aliases.get(row.version, []),
        metrics=row.metrics,
        card=row.card if card else None,
    )


def _deployment_out(row: DeploymentRow) -> DeploymentOut:
    return DeploymentOut(
        alias=row.alias,
        version=row.version,
        started_at=row.started_at,
        ended_at=row.ended_at,
        by=row.by,
        reason=row.reason,
    )


def _serving(state: AppState) -> str:
    return state.service.classifier.version


@router.get("", response_model=ModelsOut)
def list_models(state: StateDep, _: PrincipalDep) -> ModelsOut:
    """Registered versions (newest first), the aliases, and the version this server serves."""
    with state.db.read() as session:
        aliases = repo.aliases_by_version(session)
        versions = [_version_out(row, aliases) for row in repo.list_versions(session)]
    by_alias = {alias: version for version, names in aliases.items() for alias in names}
    return ModelsOut(serving=_serving(state), aliases=by_alias, versions=versions)


@router.get("/history", response_model=list[DeploymentOut])
def model_history(
    state: StateDep, _: PrincipalDep, alias: Annotated[Alias, Query()] = "production"
) -> list[Any]:
    """Which version the alias pointed to, from when to when, and why (oldest first)."""
    repo.check_alias(alias)
    with state.db.read() as session:
        return [_deployment_out(row) for row in repo.history(session, alias)]


@router.get("/{version}", response_model=VersionOut, responses=error_responses(404))
def get_model(version: str, state: StateDep, _: PrincipalDep) -> VersionOut:
    """One version with its card (config and heads' metadata) and metrics."""
    with state.db.read() as session:
        row = repo.get_version(session, version)
        return _version_out(row, repo.aliases_by_version(session), card=True)


async def _deployed(state: AppState, deployment: DeploymentRow, by: str) -> DeployOut:
    if deployment.alias == repo.PRODUCTION and state.watcher is not None:
        await state.watcher.check()
    refused = followup.refusal(state.db, deployment, _serving(state))
    started = "off"
    if refused is None and followup.reclassify_follows(
        deployment, state.settings.reclassify_on_promote
    ):
        try:
            started = await start_reclassify(state, None, by=by)
        except ReclassifySupersededError as exc:
            # Another promotion or rollback came first; its re-classification follows it.
            log.warning("%s", exc.message)
            started = "superseded"
    return DeployOut(
        deployment=_deployment_out(deployment),
        serving=_serving(state),
        reclassify=started,
        refused=refused,
    )


@router.post(
    "/{version}/promote", response_model=DeployOut, responses=error_responses(400, 404, 409, 413)
)
async def promote_model(
    version: str, state: StateDep, principal: AdminDep, body: PromoteIn | None = None
) -> DeployOut:
    """Point an alias (default production) at a version, after the promotion gates.

    409 ``promotion_gated`` names every failing gate; ``force: true`` skips them. 409
    ``model_unloadable``: the version's files no longer load (checked even with force).
    """
    body = body or PromoteIn()
    deployment = await asyncio.to_thread(
        promote.promote,
        state.db,
        state.settings,
        version,
        by=principal.name,
        clock=state.clock,
        alias=body.alias,
        force=body.force,
        reuse=state.service.classifier,
    )
    return await _deployed(state, deployment, principal.name)


@router.post("/rollback", response_model=DeployOut, responses=error_responses(400, 409, 413))
async def rollback_model(
    state: StateDep, principal: AdminDep, body: RollbackIn | None = None
) -> DeployOut:
    """Point an alias back at the version it had before (409 when there is none)."""
    body = body or RollbackIn()
    deployment = await asyncio.to_thread(
        promote.rollback,
        state.db,
        state.settings,
        by=principal.name,
        clock=state.clock,
        alias=body.alias,
    )
    return await _deployed(state, deployment, principal.name)


@router.post(
    "/reclassify", status_code=status.HTTP_202_ACCEPTED, responses=error_responses(400, 409, 413)
)
async def reclassify_images(
    state: StateDep, principal: AdminDep, body: ReclassifyIn | None = None
) -> dict[str, str]:
    """Re-classify opted-in advertisers' images with the served model, in the background.

    409 ``reclassify_superseded``: the served model is not production (a fallback, or
    production moved since this server's last poll).
    """
    body = body or ReclassifyIn()
    return {"reclassify": await start_reclassify(state, body.advertiser_id, by=principal.name)}


async def start_reclassify(state: AppState, advertiser_id: str | None, *, by: str) -> str:
    """Record, then start, a background re-classification with the served model.

    The request is recorded before the task starts: a server stopped before the run
    finishes leaves it open, reported by ``/healthz`` and ``cartag models list`` until a
    server of production takes it over (:func:`resume_reclassifications`) or ``cartag
    models reclassify`` finishes it.

    Returns:
        ``started``, or ``no opted-in advertisers``.

    Raises:
        ConflictError: ``advertiser_id`` has not opted in.
        ReclassifySupersededError: The served model is not production.
    """
    if not followup.advertisers_to_run(state.db, advertiser_id):
        return "no opted-in advertisers"
    model = state.service.classifier  # the run uses the model its request names
    request_id = await asyncio.to_thread(
        record_request,
        state.db,
        model.version,
        advertiser_id,
        by=by,
        clock=state.clock,
    )

    async def run() -> None:
        try:
            await reclassify(
                state.db,
                state.settings,
                model,
                state.service.fetcher,
                state.clock,
                advertiser_id=advertiser_id,
                lookup_cache=state.service.lookup_cache,
                request_id=request_id,
            )
        except ReclassifySupersededError as exc:
            # Another deployment's re-classification takes over: no failure.
            log.warning("%s", exc.message)
        except Exception:  # noqa: BLE001 - a background task has nobody else to tell
            log.exception("re-classification failed")

    task = asyncio.get_running_loop().create_task(run(), name="cartag-reclassify")
    state.background.add(task)
    task.add_done_callback(state.background.discard)
    return "started"


async def resume_reclassifications(state: AppState) -> None:
    """Every half ``CARTAG_JOB_LEASE_S``, finish a re-classification whose run stopped.

    A request left open by a server stopped or killed part-way is taken over by one
    server serving production's model (:func:`cartag.jobs.reclassify.resume_stale`), at
    start and then while it serves; runs one at a time. Cancelled with the app.
    """
    interval = state.settings.job_lease_s / 2
    while True:
        try:
            while await resume_stale(
                state.db,
                state.settings,
                state.service.classifier,
                state.service.fetcher,
                state.clock,
                lookup_cache=state.service.lookup_cache,
            ):
                pass  # another may wait
        except ReclassifySupersededError as exc:
            log.warning("%s", exc.message)
        except Exception:  # noqa: BLE001 - the next round tries again
            log.exception("resuming a stopped re-classification failed")
        await asyncio.sleep(interval)
