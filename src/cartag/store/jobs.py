"""Repository functions for classify jobs and their items.

A job's items are written with the job; each item's result is stored once
(``WHERE result IS NULL``), so a job resumed after a crash never classifies an
image twice and never loses a finished one.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Sequence
from typing import Any

from sqlalchemy import func, insert, select, update
from sqlalchemy.orm import Session

from cartag.errors import NotFoundError
from cartag.store.tables import JobItemRow, JobRow

QUEUED, RUNNING, DONE, FAILED = "queued", "running", "done", "failed"


def create_job(
    session: Session,
    *,
    advertiser_id: str,
    items: Sequence[tuple[str, str | None]],
    callback_url: str | None,
    now: dt.datetime,
) -> JobRow:
    """Store a job and its ``(url, scrape_color)`` items, queued."""
    job = JobRow(
        id=str(uuid.uuid4()),
        advertiser_id=advertiser_id,
        status=QUEUED,
        total=len(items),
        done=0,
        callback_url=callback_url,
        created_at=now,
    )
    session.add(job)
    session.flush()
    session.execute(
        insert(JobItemRow),
        [
            {"job_id": job.id, "idx": i, "url": url, "scrape_color": color}
            for i, (url, color) in enumerate(items)
        ],
    )
    return job


def get_job(session: Session, job_id: str) -> JobRow:
    """Raises NotFoundError for an unknown id."""
    job = session.get(JobRow, job_id)
    if job is None:
        raise NotFoundError(f"no job with id {job_id!r}")
    return job


def job_results(session: Session, job_id: str) -> list[dict[str, Any] | None]:
    """Item results in request order (None where not done yet)."""
    stmt = select(JobItemRow.result).where(JobItemRow.job_id == job_id).order_by(JobItemRow.idx)
    return list(session.scalars(stmt))


def claim_next_job(session: Session, now: dt.datetime) -> JobRow | None:
    """Take the oldest queued job and mark it running (skips jobs locked by other workers)."""
    stmt = (
        select(JobRow)
        .where(JobRow.status == QUEUED)
        .order_by(JobRow.created_at)
        .limit(1)
        .with_for_update(skip_locked=True)
    )
    job = session.scalars(stmt).one_or_none()
    if job is None:
        return None
    job.status = RUNNING
    job.started_at = job.started_at or now
    return job


def requeue_running(session: Session) -> int:
    """Put jobs left running by a stopped process back in the queue; returns how many."""
    result = session.execute(update(JobRow).where(JobRow.status == RUNNING).values(status=QUEUED))
    return int(getattr(result, "rowcount", 0) or 0)


def pending_items(session: Session, job_id: str, limit: int) -> list[JobItemRow]:
    """The next items without a result, in order."""
    stmt = (
        select(JobItemRow)
        .where(JobItemRow.job_id == job_id, JobItemRow.result.is_(None))
        .order_by(JobItemRow.idx)
        .limit(limit)
    )
    return list(session.scalars(stmt))


def save_item_results(session: Session, job_id: str, results: dict[int, dict[str, Any]]) -> int:
    """Store results of items that have none yet; returns the job's new done count."""
    for idx, result in results.items():
        session.execute(
            update(JobItemRow)
            .where(
                JobItemRow.job_id == job_id,
                JobItemRow.idx == idx,
                JobItemRow.result.is_(None),
            )
            .values(result=result)
        )
    done = session.scalar(
        select(func.count())
        .select_from(JobItemRow)
        .where(JobItemRow.job_id == job_id, JobItemRow.result.is_not(None))
    )
    session.execute(update(JobRow).where(JobRow.id == job_id).values(done=int(done or 0)))
    return int(done or 0)


def finish_job(
    session: Session, job_id: str, *, status: str, now: dt.datetime, error: str | None = None
) -> None:
    session.execute(
        update(JobRow)
        .where(JobRow.id == job_id)
        .values(status=status, finished_at=now, error=error)
    )


def set_callback_status(session: Session, job_id: str, status: str) -> None:
    session.execute(update(JobRow).where(JobRow.id == job_id).values(callback_status=status))
