"""The in-process job worker: runs queued classify jobs in the server's event loop.

Job state lives in the store, so a restarted server picks up where it stopped:
jobs left ``running`` are queued again and only their unfinished items run.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from cartag.clock import Clock
from cartag.jobs import execute
from cartag.jobs.dispatch import JobDispatcher
from cartag.pipeline.classify import ClassifyService
from cartag.store import jobs as job_repo
from cartag.store.db import Database
from cartag.store.tables import JobRow

log = logging.getLogger(__name__)


class JobRunner(JobDispatcher):
    """Claims queued jobs and classifies them chunk by chunk (see :mod:`cartag.jobs.execute`).

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
        super().__init__(db, clock)
        self.service = service
        self.chunk_size = chunk_size
        self.poll_interval_s = poll_interval_s
        self.callback_results_limit = callback_results_limit
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def _dispatch(self, job_id: str, total: int) -> None:
        self._wake.set()

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

    def _claim(self) -> JobRow | None:
        with self.db.write() as session:
            return job_repo.claim_next_job(session, self.clock.now())

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
        # A write transaction: off the event loop, or every poll stalls the requests.
        job = await asyncio.to_thread(self._claim)
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
            if not execute.finish_if_complete(self.db, self.clock, job.id):
                return True  # finished by someone else, or failed meanwhile
        await self._callback(job.id)
        return True

    async def _process(self, job: JobRow) -> None:
        while True:
            held = 0
            for start, stop in execute.chunk_bounds(job.total, self.chunk_size):
                report = await execute.run_job_chunk(
                    self.db, self.service, self.clock, job.id, start, stop
                )
                if report.job_status in (job_repo.DONE, job_repo.FAILED):
                    return
                held += report.held_elsewhere
            if not held:
                return
            # Another process holds some items (PostgreSQL row locks): they are stored
            # when it finishes, or free again if it dies.
            await asyncio.sleep(self.poll_interval_s)

    async def _callback(self, job_id: str) -> None:
        await execute.send_callback(
            self.db, self.service.fetcher, job_id, results_limit=self.callback_results_limit
        )
