"""The in-process job worker: runs queued classify jobs in the server's event loop.

Job state lives in the store, so a restarted server picks up where it stopped: only
a job's unfinished items run again. A runner writes a heartbeat on the job it runs every
quarter of ``lease_s``; a running job whose heartbeat is older than that lost its process
(killed, or one of ``cartag serve --workers N`` that died and was replaced), and any
runner on the store puts it back in the queue, without a restart. A runner that stops
puts its job back at once. Jobs other live processes run are never taken from them, so
several servers (or one starting beside another) share a store safely.

A storage failure (full disk, read-only or unreachable database) never leaves a job
``running`` for nobody: a chunk whose results could not be stored is run again with
backoff; if the store still refuses, the job goes back to the queue with the reason in
its ``error``, and when even that write fails the runner keeps the job's id and requeues
it as soon as the store takes writes again, without a restart.

Callbacks are sent beside the jobs (a slow or failing receiver, retried with backoff,
never holds up the queue). Every runner, in each process of ``cartag serve --workers N``
too, also sweeps for callbacks no process is sending (a stopped process did not send
them, or died retrying them) when it starts and every ``callback_sweep_s``: each callback
is claimed in the database before it is sent, so only one process sends it.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import time
from collections.abc import Coroutine
from functools import partial
from typing import Any

from cartag.clock import Clock
from cartag.jobs import delivery, execute
from cartag.jobs.base import JobDispatcher
from cartag.jobs.beats import beating
from cartag.pipeline.classify import ClassifyService
from cartag.store import jobs as job_repo
from cartag.store.db import Database
from cartag.store.health import storage_problem
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
        chunk_retries: Runs again of a chunk whose results could not be stored (storage
            failure) before the job is put back in the queue.
        retry_backoff_s: Wait before the first of those runs; doubles each time.
        lease_s: How long a running job's heartbeat may be silent before another runner
            takes it back (``CARTAG_JOB_LEASE_S``); heartbeats come every quarter of it.
        callback_attempts: Attempts of a callback whose receiver failed transiently.
        callback_backoff_s: Wait before its second attempt; doubles each time.
        callback_sweep_s: How often to look for callbacks no process is sending (also
            at start); jobs of the last :data:`~cartag.jobs.delivery.CALLBACK_SWEEP_WINDOW_S`.
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
        chunk_retries: int = 3,
        retry_backoff_s: float = 1.0,
        lease_s: float = 60.0,
        callback_attempts: int = delivery.CALLBACK_ATTEMPTS,
        callback_backoff_s: float = delivery.CALLBACK_BACKOFF_S,
        callback_sweep_s: float = delivery.CALLBACK_SWEEP_S,
    ) -> None:
        super().__init__(db, clock)
        self.lease_s = lease_s
        self._next_stale_check = 0.0
        self.service = service
        self.chunk_size = chunk_size
        self.poll_interval_s = poll_interval_s
        self.callback_results_limit = callback_results_limit
        self.chunk_retries = chunk_retries
        self.retry_backoff_s = retry_backoff_s
        self.callback_attempts = callback_attempts
        self.callback_backoff_s = callback_backoff_s
        self.callback_sweep_s = callback_sweep_s
        self._sweep: asyncio.Task[None] | None = None
        self._next_sweep = 0.0
        # Callbacks being sent (or waiting to retry); stop() cancels them.
        self._callbacks: set[asyncio.Task[None]] = set()
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        # Jobs this runner let go of after a storage failure but could not put back in
        # the queue (that write failed too): they are requeued at the next poll.
        self.stranded: set[str] = set()
        self._idle_failures = 0

    def _dispatch(self, job_id: str, total: int) -> None:
        self._wake.set()

    def ended(self, job_id: str) -> None:
        """Send the callback of a job cancelled through the API (on the event loop)."""
        self._track(self._callback(job_id))

    def start(self) -> None:
        """Requeue jobs whose process stopped beating, send the callbacks no process is
        sending, then start the worker task."""
        self.requeue_stale()
        self._start_sweep(since=None)
        self._task = asyncio.create_task(self._run_forever(), name="cartag-jobs")

    async def stop(self) -> None:
        """Stop the worker and the callbacks in flight (sent again at the next start)."""
        tasks = [*self._callbacks, *([self._task] if self._task is not None else [])]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._task = None

    async def run_until_idle(self) -> int:
        """Run queued jobs until none is left, and wait for their callbacks; returns how
        many runs of a job ended (a job that stepped aside for another counts once more)."""
        ran = 0
        while await self._run_one():
            ran += 1
        await self.wait_for_callbacks()
        return ran

    async def wait_for_callbacks(self) -> None:
        """Wait until the callbacks being sent are delivered or given up."""
        while self._callbacks:
            await asyncio.wait(set(self._callbacks))

    def _track(self, coro: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        task = asyncio.create_task(coro)
        self._callbacks.add(task)
        task.add_done_callback(self._callbacks.discard)
        return task

    def _start_sweep(self, since: dt.datetime | None) -> None:
        """Send the callbacks no process is sending, one sweep at a time."""
        if self._sweep is not None and not self._sweep.done():
            return
        self._next_sweep = time.monotonic() + self.callback_sweep_s
        self._sweep = self._track(self._send_pending_callbacks(since))

    def _sweep_if_due(self) -> None:
        if time.monotonic() >= self._next_sweep:
            self._start_sweep(since=delivery.sweep_since(self.clock))

    def _claim(self) -> JobRow | None:
        with self.db.write() as session:
            return job_repo.claim_next_job(session, self.clock.now())

    def requeue_stale(self) -> int:
        """Queue again the running jobs whose heartbeat is older than the lease.

        A read first: the write (a lock on SQLite) only when there is such a job.
        """
        self._next_stale_check = time.monotonic() + self.lease_s / 4
        before = self.clock.now() - dt.timedelta(seconds=self.lease_s)
        with self.db.read() as session:
            stale = job_repo.stale_running(session, before)
        if not stale:
            return 0
        with self.db.write() as session:
            requeued = job_repo.requeue_stale(session, stale, before)
        if requeued:
            log.warning(
                "requeued %d job(s) whose process stopped (no heartbeat for %.0f s)",
                requeued,
                self.lease_s,
            )
        return requeued

    async def _run_forever(self) -> None:
        while True:
            delay = self.poll_interval_s
            self._sweep_if_due()
            try:
                if time.monotonic() >= self._next_stale_check:
                    await asyncio.to_thread(self.requeue_stale)
                if await self._run_one():
                    self._idle_failures = 0
                    continue
                self._idle_failures = 0
            except Exception as exc:  # noqa: BLE001 - the worker must outlive any one job
                problem = storage_problem(exc)
                if problem is None:
                    log.exception("job worker step failed")
                else:
                    # The store refuses writes (claiming a job is one): wait longer and
                    # longer (up to 30 s) instead of logging a traceback every poll.
                    self._idle_failures += 1
                    delay = min(self.poll_interval_s * 2**self._idle_failures, 30.0)
                    log.warning("job worker: %s; next try in %.0f s", problem, delay)
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), delay)

    async def _run_one(self) -> bool:
        """Requeue stranded jobs, then claim and run one job.

        Returns:
            True when a job ran to its end (done or failed); False when there was none,
            or when a storage failure sent it back to the queue (try again after a pause).
        """
        if self.stranded:
            await asyncio.to_thread(self.requeue_stranded)
        # A write transaction: off the event loop, or every poll stalls the requests.
        job = await asyncio.to_thread(self._claim)
        if job is None:
            return False
        # The beats stop once the job no longer runs here: finished, or taken back after
        # a silence (its items are stored once).
        async with beating(partial(self._beat, job.id), self.lease_s / 4, f"job {job.id}"):
            try:
                return await self._run_claimed(job)
            except asyncio.CancelledError:
                # Stopping: the next start (here or in another process) takes it at once,
                # rather than after the lease.
                self._give_back(job.id)
                raise

    def _beat(self, job_id: str) -> bool:
        with self.db.write() as session:
            return job_repo.beat(session, job_id, self.clock.now())

    def _give_back(self, job_id: str) -> None:
        try:
            with self.db.write() as session:
                job_repo.requeue_job(session, job_id, error=None)
        except Exception as exc:  # noqa: BLE001 - taken back after the lease instead
            log.warning("job %s not put back in the queue on stop: %r", job_id, exc)

    async def _run_claimed(self, job: JobRow) -> bool:
        try:
            if await self._process(job):
                return True  # stepped aside: back in the queue, behind a new job
            if not await asyncio.to_thread(execute.finish_if_complete, self.db, self.clock, job.id):
                return True  # finished by someone else, or failed meanwhile
        except Exception as exc:  # noqa: BLE001 - recorded on the job, never lost
            problem = storage_problem(exc)
            if problem is not None:
                await asyncio.to_thread(self._release, job.id, problem)
                return False
            log.exception("job %s failed", job.id)
            try:
                execute.fail_job(self.db, self.clock, job.id, str(exc))
            except Exception as write_exc:
                problem = storage_problem(write_exc)
                if problem is None:
                    raise
                await asyncio.to_thread(self._release, job.id, problem)
                return False
        self._track(self._callback(job.id))
        return True

    def _release(self, job_id: str, problem: str) -> None:
        """Put a job that a storage failure interrupted back in the queue, or keep it stranded."""
        try:
            with self.db.write() as session:
                job_repo.requeue_job(session, job_id, error=f"waiting to retry: {problem}")
        except Exception as exc:  # noqa: BLE001 - any failure here: try again later
            self.stranded.add(job_id)
            log.error(
                "job %s: %s; it could not be put back in the queue either (%r): it is "
                "requeued as soon as the store takes writes again",
                job_id,
                problem,
                getattr(exc, "orig", None) or exc,
            )
            return
        self.stranded.discard(job_id)
        log.warning("job %s: %s; back in the queue, retried at the next poll", job_id, problem)

    def requeue_stranded(self) -> int:
        """Requeue the jobs a storage failure left ``running``; returns how many were."""
        requeued = 0
        for job_id in sorted(self.stranded):
            try:
                with self.db.write() as session:
                    job_repo.requeue_job(
                        session, job_id, error="waiting to retry: interrupted by a storage failure"
                    )
            except Exception as exc:  # noqa: BLE001 - still failing: next poll
                log.warning("job %s is still stranded: %r", job_id, getattr(exc, "orig", exc))
                continue
            self.stranded.discard(job_id)
            requeued += 1
            log.info("job %s requeued after a storage failure", job_id)
        return requeued

    async def _run_chunk(self, job_id: str, start: int, stop: int) -> execute.ChunkReport:
        """Run a chunk; one whose results could not be stored (storage failure) runs again.

        Running a chunk twice is safe: results are stored once, and images classified
        before the failure are answered from the image cache when it took them.
        """
        attempt = 0
        while True:
            try:
                return await execute.run_job_chunk(
                    self.db, self.service, self.clock, job_id, start, stop
                )
            except Exception as exc:
                problem = storage_problem(exc)
                if problem is None or attempt >= self.chunk_retries:
                    raise
                delay = self.retry_backoff_s * 2**attempt
                attempt += 1
                log.warning(
                    "job %s chunk [%d, %d): results not stored: %s; run %d of %d again in %.1f s",
                    job_id,
                    start,
                    stop,
                    problem,
                    attempt,
                    self.chunk_retries,
                    delay,
                )
                try:
                    self.service.telemetry.storage_failed("job_chunk")
                except Exception:  # noqa: BLE001 - metrics must never stop a job
                    log.exception("telemetry failed on a storage failure")
                await asyncio.sleep(delay)

    async def _process(self, job: JobRow) -> bool:
        """Run the job's chunks from its first item without a result.

        Returns:
            True when it stepped aside after a chunk, back in the queue, because a job
            that has not started was waiting (see :func:`job_repo.claim_next_job`);
            False when its chunks are done (or it finished elsewhere, or was cancelled).
        """
        while True:
            held = 0
            first = await asyncio.to_thread(self._first_pending, job.id)
            for start, stop in execute.chunk_bounds(job.total, self.chunk_size):
                if first is None or stop <= first:
                    continue  # every item of the chunk has its result
                report = await self._run_chunk(job.id, start, stop)
                if report.job_status in (job_repo.DONE, job_repo.FAILED):
                    return False
                held += report.held_elsewhere
                if stop < job.total and await asyncio.to_thread(self._step_aside, job.id):
                    return True
            if not held:
                return False
            # Another process holds some items (PostgreSQL row locks): they are stored
            # when it finishes, or free again if it dies.
            await asyncio.sleep(self.poll_interval_s)

    def _first_pending(self, job_id: str) -> int | None:
        with self.db.read() as session:
            return job_repo.first_pending(session, job_id)

    def _step_aside(self, job_id: str) -> bool:
        """Requeue the job if a job that has not started waits (a read first: no write
        transaction after each chunk otherwise)."""
        with self.db.read() as session:
            if not job_repo.unstarted_waiting(session):
                return False
        with self.db.write() as session:
            return job_repo.requeue_job(session, job_id, error=None)

    def _policy(self) -> delivery.CallbackPolicy:
        return delivery.CallbackPolicy.from_settings(
            self.service.settings,
            results_limit=self.callback_results_limit,
            attempts=self.callback_attempts,
            backoff_s=self.callback_backoff_s,
        )

    async def _callback(self, job_id: str) -> None:
        await delivery.send_callback_or_leave(
            self.db, self.service.fetcher, job_id, clock=self.clock, policy=self._policy()
        )

    async def _send_pending_callbacks(self, since: dt.datetime | None) -> None:
        try:
            await delivery.send_pending_callbacks(
                self.db, self.service.fetcher, clock=self.clock, policy=self._policy(), since=since
            )
        except Exception:  # noqa: BLE001 - tried again at the next sweep
            log.exception("sending the callbacks no process was sending failed")
