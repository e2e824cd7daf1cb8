"""Large inventories: POST /v1/jobs returns at once; GET /v1/jobs/{id} shows progress.

A job is readable by the API key that submitted it and by admin keys; to any other key
it does not exist (404). Jobs made before owners were recorded are for admins only.
"""

from __future__ import annotations

import asyncio
from typing import Annotated, Literal

from fastapi import APIRouter, Query, Response, status

from cartag.api.deps import ClassifierDep, StateDep
from cartag.api.paging import (
    MAX_PAGE,
    OFFSET_DESCRIPTION,
    PAGE_DESCRIPTION,
    page_numbers,
    page_offset,
)
from cartag.api.schemas.classify import JobIn, JobListOut, JobOut, ResultOut
from cartag.api.schemas.common import MAX_ID, error_responses
from cartag.errors import FetchError, InputError, NotFoundError
from cartag.redaction import redact_url
from cartag.store import jobs as job_repo
from cartag.store.apikeys import Principal
from cartag.store.tables import JobRow
from cartag.vocab import parse_scrape_color

router = APIRouter(prefix="/v1/jobs", tags=["jobs"], responses=error_responses(401, 403, 422, 503))

# Stored for a scrape color that is no color: job_items.scrape_color holds 16 characters,
# and the pipeline ignores this one (color_reason scrape_color_unknown) as it would the
# color the scraper sent.
_UNKNOWN_COLOR = "?"


def _stored_color(value: str | None) -> str | None:
    color, reason = parse_scrape_color(value)
    return _UNKNOWN_COLOR if reason is not None else color


def _job_out(job: JobRow, results: list[ResultOut] | None = None) -> JobOut:
    return JobOut(
        id=job.id,
        advertiser_id=job.advertiser_id,
        status=job.status,
        total=job.total,
        done=job.done,
        progress=round(job.done / job.total, 4) if job.total else 1.0,
        # The stored URL may still hold a token (until the callback is sent): never shown.
        callback_url=redact_url(job.callback_url) if job.callback_url else None,
        # Without the claim of the process sending it (``retrying:http_503@<until>.<id>``).
        callback_status=job_repo.visible_callback_status(job.callback_status),
        error=job.error,
        created_at=job.created_at,
        started_at=job.started_at,
        finished_at=job.finished_at,
        results=results,
    )


@router.post(
    "",
    response_model=JobOut,
    status_code=status.HTTP_202_ACCEPTED,
    responses=error_responses(400, 413, 503),
)
async def submit_job(
    body: JobIn, state: StateDep, principal: ClassifierDep, response: Response
) -> JobOut:
    """Queue an inventory for classification; poll GET /v1/jobs/{id} or wait for the callback.

    Answers 202 with the job's URL in ``Location``. The callback URL must pass the
    download address guard now (422 otherwise). A key scoped to advertisers submits jobs
    for them only (403 otherwise).
    """
    principal.require_advertiser(body.advertiser_id)
    limit = state.settings.max_images_per_job
    if len(body.images) > limit:
        raise InputError(f"{len(body.images)} images; a job takes at most {limit}", field="images")
    if body.callback_url is not None:
        try:
            await state.service.fetcher.check_address(body.callback_url)
        except FetchError as exc:
            raise InputError(
                f"callback_url is refused ({exc.reason}): {redact_url(exc.message)}",
                field="callback_url",
            ) from exc
    # Off the event loop, as when this route was synchronous: a big job is a big insert.
    job = await asyncio.to_thread(
        state.jobs.submit,
        body.advertiser_id,
        [(i.url, _stored_color(i.scrape_color)) for i in body.images],
        body.callback_url,
        owner_key_id=principal.key_id,
    )
    response.headers["Location"] = f"/v1/jobs/{job.id}"
    return _job_out(job)


@router.get("", response_model=JobListOut)
def list_jobs(
    state: StateDep,
    principal: ClassifierDep,
    in_state: Annotated[
        Literal["queued", "running", "done", "failed"] | None,
        Query(alias="status", description="Only jobs in this state."),
    ] = None,
    limit: Annotated[int, Query(ge=1, le=200, description="Jobs a page.")] = 50,
    page: Annotated[int | None, Query(ge=1, le=MAX_PAGE, description=PAGE_DESCRIPTION)] = None,
    offset: Annotated[int | None, Query(ge=0, le=MAX_ID, description=OFFSET_DESCRIPTION)] = None,
) -> JobListOut:
    """The caller's jobs, newest first (admin keys: every job), without their results.

    A page at a time: ``page`` (1-based) or ``offset``, not both (422).
    """
    start = page_offset(page, offset, limit)
    owner = None if "admin" in principal.roles else principal.key_id
    with state.db.read() as session:
        rows, total = job_repo.list_jobs(
            session, owner_key_id=owner, status=in_state, limit=limit, offset=start
        )
        number, pages = page_numbers(total, limit, start)
        return JobListOut(
            jobs=[_job_out(row) for row in rows],
            total=total,
            limit=limit,
            offset=start,
            page=number,
            pages=pages,
        )


def _may_read(principal: Principal, job: JobRow) -> bool:
    return "admin" in principal.roles or (
        job.owner_key_id is not None and job.owner_key_id == principal.key_id
    )


@router.get("/{job_id}", response_model=JobOut, responses=error_responses(404))
def get_job(job_id: str, state: StateDep, principal: ClassifierDep) -> JobOut:
    """Progress of a job, and its results in request order once it has finished.

    A job that failed (a cancelled one included) answers with the results stored before
    it stopped, items it never reached left out. Only for the key that submitted it (and
    admins): to others, it does not exist.
    """
    with state.db.read() as session:
        job = job_repo.get_job(session, job_id)
        if not _may_read(principal, job):
            # The same answer as for an unknown id: another key's job ids stay secret.
            raise NotFoundError(f"no job with id {job_id!r}")
        results = None
        # A cancelled or failed job keeps what it classified: those answers were paid for
        # and are as good as a done job's, so they stay readable.
        if job.status in (job_repo.DONE, job_repo.FAILED):
            results = [
                ResultOut.model_validate(r) for r in job_repo.job_results(session, job_id) if r
            ]
        return _job_out(job, results)


@router.post("/{job_id}/cancel", response_model=JobOut, responses=error_responses(404, 409))
async def cancel_job(job_id: str, state: StateDep, principal: ClassifierDep) -> JobOut:
    """Stop a queued or running job (a mistaken one, or one no longer wanted).

    It ends ``failed`` with ``error: "cancelled by <key name>"``; the results stored so
    far stay readable, the chunk being classified finishes, no other starts, and the
    callback (if any) reports the failure. 409 once the job has finished. Only for the
    key that submitted it (and admins).
    """

    def cancel() -> JobOut:
        with state.db.write() as session:
            job = job_repo.get_job(session, job_id)
            if not _may_read(principal, job):
                raise NotFoundError(f"no job with id {job_id!r}")
            return _job_out(
                job_repo.cancel_job(session, job_id, now=state.clock.now(), by=principal.name)
            )

    # A write transaction: off the event loop, as every other write of a request.
    out = await asyncio.to_thread(cancel)
    state.jobs.ended(job_id)
    return out
