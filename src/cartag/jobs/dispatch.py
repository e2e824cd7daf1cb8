"""Where submitted jobs run: the Celery dispatcher, and the choice between it and the runner.

``CARTAG_BROKER_URL`` unset (the default): :class:`~cartag.jobs.runner.JobRunner`
runs jobs inside the API process. Set: :class:`CeleryDispatcher` stores the job and
sends one task per chunk of items to the broker, and ``cartag worker`` processes run
them against the same PostgreSQL database. Celery is imported only in that case.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from sqlalchemy.engine import make_url

from cartag.clock import Clock
from cartag.errors import ConfigError, QueueUnavailableError
from cartag.jobs.base import JobDispatcher
from cartag.jobs.execute import chunk_bounds
from cartag.jobs.runner import JobRunner
from cartag.settings import Settings
from cartag.store import jobs as job_repo
from cartag.store.db import Database

if TYPE_CHECKING:
    from cartag.pipeline.classify import ClassifyService

log = logging.getLogger(__name__)


class ChunkSender:
    """Sends ``(job_id, start, stop)`` chunk tasks to the workers."""

    def send(self, job_id: str, start: int, stop: int) -> None:
        raise NotImplementedError

    def close(self) -> None:
        """Release connections."""


class InMemoryChunkSender(ChunkSender):
    """Keeps the chunks it is given, in order (tests drive them through ``execute``)."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, int, int]] = []

    def send(self, job_id: str, start: int, stop: int) -> None:
        self.sent.append((job_id, start, stop))


class CelerySender(ChunkSender):
    """Publishes chunk tasks by name, so the API never imports the tasks or the model."""

    def __init__(self, settings: Settings) -> None:
        from cartag.jobs.celery_app import CHUNK_TASK, make_celery

        self._app: Any = make_celery(settings)
        self._task = CHUNK_TASK
        self._queue = settings.celery_queue

    def send(self, job_id: str, start: int, stop: int) -> None:
        self._app.send_task(self._task, args=[job_id, start, stop], queue=self._queue)

    def close(self) -> None:
        self._app.close()


class CeleryDispatcher(JobDispatcher):
    """Stores jobs and sends one task per ``chunk_size`` items to the workers.

    Args:
        db: The store shared with the workers (PostgreSQL).
        clock: Time source.
        sender: Where chunk tasks go.
        chunk_size: Items per task; a killed worker loses (and the broker redelivers)
            at most this many.
    """

    def __init__(self, db: Database, clock: Clock, sender: ChunkSender, chunk_size: int) -> None:
        super().__init__(db, clock)
        self.sender = sender
        self.chunk_size = chunk_size

    def _dispatch(self, job_id: str, total: int) -> None:
        self._send(job_id, chunk_bounds(total, self.chunk_size))

    def _send(self, job_id: str, chunks: list[tuple[int, int]]) -> None:
        for start, stop in chunks:
            try:
                self.sender.send(job_id, start, stop)
            except Exception as exc:
                # kombu's and the transports' errors: any of them means the same here.
                raise QueueUnavailableError(
                    f"the job queue (CARTAG_BROKER_URL) could not be reached "
                    f"({type(exc).__name__}: {exc}); the job was not stored: send it again "
                    "in a minute, and check that the broker is running"
                ) from exc

    def start(self) -> None:
        """Send again the chunks of unfinished jobs that still have items to classify.

        Covers a job stored by an API process that stopped before its tasks were sent;
        a chunk sent twice is harmless (its items are stored once). A chunk whose
        items all have their result is not sent. A broker that cannot be reached is
        logged, not fatal: the API serves without it, and the next start sends them.
        """
        with self.db.read() as session:
            jobs = job_repo.unfinished_jobs(session)
            pending: dict[str, list[tuple[int, int]]] = {}
            for job in jobs:
                unstored = job_repo.pending_chunks(session, job.id, self.chunk_size)
                pending[job.id] = [
                    (start, stop)
                    for start, stop in chunk_bounds(job.total, self.chunk_size)
                    if start // self.chunk_size in unstored
                ]
        resent = 0
        for job_id, bounds in pending.items():
            if not bounds:
                continue
            try:
                self._send(job_id, bounds)
            except QueueUnavailableError as exc:
                log.warning(
                    "unfinished jobs not sent again: %s; the next start of the API sends them",
                    exc.message,
                )
                return
            resent += 1
        if resent:
            log.info("sent the pending chunks of %d unfinished job(s) again", resent)

    async def stop(self) -> None:
        self.sender.close()


def build_dispatcher(
    settings: Settings,
    db: Database,
    service: ClassifyService,
    clock: Clock,
    *,
    sender: ChunkSender | None = None,
) -> JobDispatcher:
    """The dispatcher the settings ask for: Celery with ``CARTAG_BROKER_URL``, else in-process.

    Raises:
        ConfigError: A broker is configured but the database is not PostgreSQL
            (an injected ``sender`` skips the check: tests drive chunks themselves).
    """
    if not settings.broker_url and sender is None:
        return JobRunner(
            db,
            service,
            clock,
            chunk_size=settings.job_chunk_size,
            chunk_retries=settings.job_chunk_retries,
            lease_s=settings.job_lease_s,
        )
    if sender is None:
        check_shared_database(db)
    return CeleryDispatcher(db, clock, sender or CelerySender(settings), settings.job_chunk_size)


def check_broker_settings(settings: Settings) -> None:
    """With ``CARTAG_BROKER_URL`` set, the configured database must be PostgreSQL.

    Raises:
        ConfigError: It is not (checked before anything starts).
    """
    if settings.broker_url:
        _require_postgresql(make_url(settings.resolved_database_url).get_backend_name())


def check_shared_database(db: Database) -> None:
    """Celery workers and the API must share one PostgreSQL database."""
    _require_postgresql(db.dialect)


def _require_postgresql(dialect: str) -> None:
    if dialect != "postgresql":
        raise ConfigError(
            f"CARTAG_BROKER_URL is set but the database is {dialect}: Celery workers and "
            "the API must share a PostgreSQL database. Set CARTAG_DATABASE_URL="
            "postgresql+psycopg://user@host/db, or unset CARTAG_BROKER_URL to run jobs in-process."
        )
