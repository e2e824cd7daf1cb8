"""The in-process job worker: runs queued classify jobs in the server's event loop.

Job state lives in the store, so a restarted server picks up where it stopped:
jobs left ``running`` are queued again and only their unfinished items run.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence
from typing import Any

from cartag.clock import Clock
from cartag.errors import FetchError
from cartag.pipeline.classify import ClassifyService
from cartag.pipeline.results import ImageRequest
from cartag.store import jobs as job_repo
from cartag.store.db import Database
from cartag.store.tables import JobRow

log = logging.getLogger(__name__)


class JobRunner:
    """Claims queued jobs and classifies them chunk by chunk.

    Args:
        db: The store.
        service: The classify service shared with the API.
        clock: Time source.
        chunk_size: Images classified (and committed) per step; progress moves by this.
        poll_interval_s: How often to look for jobs submitted by other processes.
        callback_results_limit: Jobs up to this size carry their results in the callback.
    """

    def __init__(
        self,
        db: Database,
        service: ClassifyService,
        clock: Clock,
        *,
        chunk_size: int = 100,
        poll_interval_s: float = 1.0,
        callback_results_limit: int = 1000,
    ) -> None:
        self.db = db
        self.service = service
        self.clock = clock
        self.chunk_size = chunk_size
        self.poll_interval_s = poll_interval_s
        self.callback_results_limit = callback_results_limit
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def submit(
        self,
        advertiser_id: str,
        items: Sequence[tuple[str, str | None]],
        callback_url: str | None,
    ) -> JobRow:
        """Store a new job and wake the worker; returns at once."""
        with self.db.write() as session:
            job = job_repo.create_job(
                session,
                advertiser_id=advertiser_id,
                items=items,
                callback_url=callback_url,
                now=self.clock.now(),
            )
        self._wake.set()
        return job

    def start(self) -> None:
        """Requeue jobs a previous process left running, then start the worker task."""
        with self.db.write() as session:
            requeued = job_repo.requeue_running(session)
        if requeued:
            log.info("requeued %d interrupted job(s)", requeued)
        self._task = asyncio.create_task(self._run_forever(), name="cartag-jobs")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def run_until_idle(self) -> int:
        """Run queued jobs until none is left; returns how many ran."""
        ran = 0
        while await self._run_one():
            ran += 1
        return ran

    async def _run_forever(self) -> None:
        while True:
            try:
                if await self._run_one():
                    continue
            except Exception:  # noqa: BLE001 - the worker must outlive any one job
                log.exception("job worker step failed")
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.poll_interval_s)

    async def _run_one(self) -> bool:
        with self.db.write() as session:
            job = job_repo.claim_next_job(session, self.clock.now())
        if job is None:
            return False
        try:
            await self._process(job)
        except Exception as exc:  # noqa: BLE001 - recorded on the job, never lost
            log.exception("job %s failed", job.id)
            with self.db.write() as session:
                job_repo.finish_job(
                    session, job.id, status=job_repo.FAILED, now=self.clock.now(), error=str(exc)
                )
        else:
            with self.db.write() as session:
                job_repo.finish_job(session, job.id, status=job_repo.DONE, now=self.clock.now())
        await self._callback(job.id)
        return True

    async def _process(self, job: JobRow) -> None:
        while True:
            with self.db.read() as session:
                items = job_repo.pending_items(session, job.id, self.chunk_size)
            if not items:
                return
            requests = [ImageRequest(item.url, item.scrape_color) for item in items]
            results = await self.service.classify(job.advertiser_id, requests)
            with self.db.write() as session:
                job_repo.save_item_results(
                    session,
                    job.id,
                    {item.idx: r.to_dict() for item, r in zip(items, results, strict=True)},
                )

    async def _callback(self, job_id: str) -> None:
        with self.db.read() as session:
            job = job_repo.get_job(session, job_id)
            if not job.callback_url:
                return
            payload: dict[str, Any] = {
                "job_id": job.id,
                "advertiser_id": job.advertiser_id,
                "status": job.status,
                "total": job.total,
                "done": job.done,
                "error": job.error,
                "results_url": f"/v1/jobs/{job.id}",
            }
            if job.total <= self.callback_results_limit:
                payload["results"] = job_repo.job_results(session, job.id)
            url = job.callback_url
        try:
            status = await self.service.fetcher.post_json(url, payload)
            outcome = f"delivered:{status}" if status < 400 else f"failed:http_{status}"
        except FetchError as exc:
            outcome = f"failed:{exc.reason}"
        with self.db.write() as session:
            job_repo.set_callback_status(session, job_id, outcome)
