"""Large inventories: POST /v1/jobs returns at once; GET /v1/jobs/{id} shows progress."""

from __future__ import annotations

from fastapi import APIRouter, status

from cartag.api.deps import ClassifierDep, StateDep
from cartag.api.schemas import JobIn, JobOut, ResultOut
from cartag.errors import InputError
from cartag.store import jobs as job_repo
from cartag.store.tables import JobRow

router = APIRouter(prefix="/v1/jobs", tags=["jobs"])


def _job_out(job: JobRow, results: list[ResultOut] | None = None) -> JobOut:
    return JobOut(
        id=job.id,
        advertiser_id=job.advertiser_id,
        status=job.status,
        total=job.total,
        done=job.done,
        progress=round(job.done / job.total, 4) if job.total else 1.0,
        callback_url=job.callback_url,
        callback_status=job.callback_status,
        error=job.error,
        created_at=job.created_at,
        started_at=job.started_at,
        finished_at=job.finished_at,
        results=results,
    )


@router.post("", response_model=JobOut, status_code=status.HTTP_202_ACCEPTED)
def submit_job(body: JobIn, state: StateDep, _: ClassifierDep) -> JobOut:
    """Queue an inventory for classification; poll GET /v1/jobs/{id} or wait for the callback."""
    limit = state.settings.max_images_per_job
    if len(body.images) > limit:
        raise InputError(f"{len(body.images)} images; a job takes at most {limit}", field="images")
    job = state.jobs.submit(
        body.advertiser_id, [(i.url, i.scrape_color) for i in body.images], body.callback_url
    )
    return _job_out(job)


@router.get("/{job_id}", response_model=JobOut)
def get_job(job_id: str, state: StateDep, _: ClassifierDep) -> JobOut:
    """Progress of a job, and its results in request order once it is done."""
    with state.db.read() as session:
        job = job_repo.get_job(session, job_id)
        results = None
        if job.status == job_repo.DONE:
            results = [
                ResultOut.model_validate(r) for r in job_repo.job_results(session, job_id) if r
            ]
        return _job_out(job, results)
