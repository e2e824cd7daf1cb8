"""Running a job, one chunk of items at a time: the plain functions behind every worker.

The in-process :class:`~cartag.jobs.runner.JobRunner` and the Celery tasks call the
same :func:`run_job_chunk`, :func:`finish_if_complete` and :func:`fail_job`.

Exactly once, per item and per image:

- An item's result is stored with a conditional UPDATE (``result IS NULL``), so a
  chunk run twice never overwrites or double-counts a result.
- On PostgreSQL a chunk locks its pending rows (``FOR UPDATE SKIP LOCKED``) for the
  whole classification, in one transaction: a second worker handed the same chunk
  (a redelivery) skips them instead of classifying them again, and when a worker is
  killed its connection and so its locks go away, and the redelivered chunk finds the
  rows free. SQLite has no row locks; it serves only the single in-process worker.
- An image classified before a kill is stored in the image cache in its own
  transaction, so the worker that finishes the chunk answers it from the cache
  without running the model again.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from cartag.clock import Clock
from cartag.logs import request_id_scope
from cartag.pipeline.classify import ClassifyService, ClassifyStats
from cartag.pipeline.results import ImageRequest
from cartag.redaction import strip_password
from cartag.store import jobs as job_repo
from cartag.store.db import Database
from cartag.store.tables import JobItemRow

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ChunkReport:
    """What one call of :func:`run_job_chunk` did.

    Attributes:
        claimed: Pending items this call took and classified.
        stored: Results it stored (less than ``claimed`` only if another worker
            stored some first, which the row locks prevent on PostgreSQL).
        held_elsewhere: Pending items of the chunk it could not take because another
            worker holds them; the chunk is not finished until they are stored.
        model_runs: Images the model classified for this chunk.
        job_status: The job's status when the chunk started (``done``/``failed``
            jobs are left alone).
    """

    claimed: int
    stored: int
    held_elsewhere: int
    model_runs: int
    job_status: str


def chunk_bounds(total: int, chunk_size: int) -> list[tuple[int, int]]:
    """``[start, stop)`` index ranges covering ``total`` items, ``chunk_size`` at a time."""
    if chunk_size <= 0:
        raise ValueError("chunk_size must be positive")
    return [(start, min(start + chunk_size, total)) for start in range(0, total, chunk_size)]


async def run_job_chunk(
    db: Database,
    service: ClassifyService,
    clock: Clock,
    job_id: str,
    start: int,
    stop: int,
) -> ChunkReport:
    """Classify the pending items ``start <= idx < stop`` of a job and store their results.

    Logs made meanwhile carry ``request_id = job:<job_id>``.

    Raises:
        NotFoundError: No job has this id.
        ModelError: The model failed (nothing of the chunk is stored; run it again).
    """
    with request_id_scope(f"job:{job_id}"):
        return await _run_job_chunk(db, service, clock, job_id, start, stop)


async def _run_job_chunk(
    db: Database,
    service: ClassifyService,
    clock: Clock,
    job_id: str,
    start: int,
    stop: int,
) -> ChunkReport:
    with db.write() as session:
        job = job_repo.get_job(session, job_id)
        if job.status in (job_repo.DONE, job_repo.FAILED):
            return ChunkReport(0, 0, 0, 0, job.status)
        job_repo.mark_running(session, job_id, clock.now())
        advertiser_id, status = job.advertiser_id, job.status
    stats = ClassifyStats()
    if db.dialect == "postgresql":
        # One transaction holds the row locks while the images are classified.
        with db.write() as session:
            items = job_repo.claim_items(session, job_id, start, stop, lock=True)
            results = await _classify(service, advertiser_id, items, stats)
            stored = job_repo.store_results(session, job_id, results, urls=_stored_urls(items))
            held = job_repo.count_pending(session, job_id, start, stop)
    else:
        with db.read() as session:
            items = job_repo.claim_items(session, job_id, start, stop, lock=False)
        results = await _classify(service, advertiser_id, items, stats)
        with db.write() as session:
            stored = job_repo.store_results(session, job_id, results, urls=_stored_urls(items))
            held = job_repo.count_pending(session, job_id, start, stop)
    log.info(
        "job %s chunk [%d, %d): %d claimed, %d stored, %d model runs, %d held elsewhere",
        job_id,
        start,
        stop,
        len(items),
        stored,
        stats.model_runs,
        held,
    )
    return ChunkReport(len(items), stored, held, stats.model_runs, status)


async def _classify(
    service: ClassifyService,
    advertiser_id: str,
    items: list[JobItemRow],
    stats: ClassifyStats,
) -> dict[int, dict[str, Any]]:
    if not items:
        return {}
    requests = [ImageRequest(item.url, item.scrape_color) for item in items]
    results = await service.classify(advertiser_id, requests, stats)
    stored = {}
    for item, result in zip(items, results, strict=True):
        # Stored results (read back by GET /v1/jobs and the callback) keep no password.
        answer = result.to_dict()
        answer["url"] = strip_password(result.url)
        stored[item.idx] = answer
    return stored


def _stored_urls(items: list[JobItemRow]) -> dict[int, str]:
    """The URLs to keep once the items' results are stored: without their passwords."""
    return {item.idx: strip_password(item.url) for item in items if "@" in item.url}


def finish_if_complete(db: Database, clock: Clock, job_id: str) -> bool:
    """Mark the job done once every item has a result.

    Returns:
        True for exactly one caller per job: the one that should send the callback.
    """
    with db.write() as session:
        return job_repo.finish_if_complete(session, job_id, clock.now())


def fail_job(db: Database, clock: Clock, job_id: str, error: str) -> None:
    """Record that a job cannot finish (its finished items keep their results)."""
    with db.write() as session:
        job_repo.finish_job(session, job_id, status=job_repo.FAILED, now=clock.now(), error=error)
