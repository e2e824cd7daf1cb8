"""The in-process runner after a storage failure: a job is retried or requeued, never stuck.

The disk is "filled" by an injected SQLite error (tests.support.storage), and the model
is a stub (the subject is the runner's bookkeeping, not classification).
"""

from __future__ import annotations

import asyncio
from typing import Any

from cartag.clock import FakeClock
from cartag.jobs.runner import JobRunner
from cartag.settings import Settings
from cartag.store import jobs as job_repo
from cartag.store.db import Database
from tests.support.fakes import SkippingService
from tests.support.storage import full_disk


def _job(db: Database, n: int) -> str:
    items = [(f"https://cdn.example/{i}.jpg", None) for i in range(n)]
    with db.write() as session:
        job = job_repo.create_job(
            session, advertiser_id="a", items=items, callback_url=None, now=FakeClock().now()
        )
    return job.id


def _runner(db: Database, service: SkippingService) -> JobRunner:
    return JobRunner(
        db,
        service,  # type: ignore[arg-type]
        FakeClock(),
        chunk_size=2,
        poll_interval_s=0.01,
        chunk_retries=2,
        retry_backoff_s=0,
    )


def _status(db: Database, job_id: str) -> tuple[str, int, str | None]:
    with db.read() as session:
        job = job_repo.get_job(session, job_id)
        return job.status, job.done, job.error


def test_a_chunk_whose_results_could_not_be_stored_runs_again(
    settings: Settings, sqlite_db: Database
) -> None:
    job_id = _job(sqlite_db, 4)
    # The first store of results fails; the chunk runs again and is stored.
    with full_disk(sqlite_db, full=False, only="UPDATE job_items") as disk:
        service = SkippingService(settings, disk)
        service.fill_disk_on_call, service.free_disk_on_call = 1, 2
        assert asyncio.run(_runner(sqlite_db, service).run_until_idle()) == 1
    assert disk.failures == 1
    assert _status(sqlite_db, job_id) == ("done", 4, None)
    assert service.calls == 3  # chunk 1 twice (once failed), chunk 2 once


def test_a_job_stranded_by_a_full_disk_is_requeued_and_finished_without_a_restart(
    settings: Settings, sqlite_db: Database
) -> None:
    # Issue 13 item 11: the disk fills while a chunk is classified; storing its results,
    # the retries and even putting the job back in the queue fail. The job must not stay
    # "running" for nobody: once the disk has room, the same runner (no restart) finishes it.
    job_id = _job(sqlite_db, 4)
    with full_disk(sqlite_db, full=False) as disk:
        service = SkippingService(settings, disk)
        service.fill_disk_on_call = 1
        runner = _runner(sqlite_db, service)

        assert asyncio.run(runner.run_until_idle()) == 0  # let go, not crashed
        assert runner.stranded == {job_id}
        assert _status(sqlite_db, job_id)[0] == "running"  # the store refused every write

        disk.full = False  # space freed
        assert asyncio.run(runner.run_until_idle()) == 1
    assert runner.stranded == set()
    assert _status(sqlite_db, job_id) == ("done", 4, None)
    with sqlite_db.read() as session:
        results = job_repo.job_results(session, job_id)
    assert [r["reason"] for r in results if r is not None] == ["http_404"] * 4


def test_a_job_the_store_can_requeue_waits_in_the_queue_with_the_reason(
    settings: Settings, sqlite_db: Database
) -> None:
    job_id = _job(sqlite_db, 2)
    # Only storing results fails: the job goes back to the queue, saying why.
    with full_disk(sqlite_db, only="UPDATE job_items") as disk:
        service = SkippingService(settings)
        runner = _runner(sqlite_db, service)
        assert asyncio.run(runner.run_until_idle()) == 0
        assert runner.stranded == set()
        status, done, error = _status(sqlite_db, job_id)
        assert (status, done) == ("queued", 0)
        assert error is not None and "disk is full" in error
        disk.full = False
        assert asyncio.run(runner.run_until_idle()) == 1
    assert _status(sqlite_db, job_id) == ("done", 2, None)


class _ChunkContext:
    """What the Celery chunk task uses of a worker process, around a stub service."""

    def __init__(self, settings: Settings, db: Database, service: SkippingService) -> None:
        self.settings = settings
        self.db = db
        self.clock = FakeClock()
        self.loop = asyncio.new_event_loop()
        self.service = service
        self.fetcher: Any = None
        self.callbacks: Any = None

    def follow_production(self) -> None:
        """The model never changes here."""

    def run(self, coro: Any) -> Any:
        return self.loop.run_until_complete(coro)


def test_a_celery_chunk_waits_out_a_storage_outage_and_never_fails_the_job_for_it(
    settings: Settings, sqlite_db: Database
) -> None:
    # With no chunk retries at all, the first storage failure failed the job (or, when
    # the failure could not be recorded either, the chunk was acknowledged unstored
    # and the job stayed running for ever).
    from celery import Celery

    from cartag.jobs.tasks import register_tasks

    job_id = _job(sqlite_db, 2)
    strict = settings.model_copy(update={"job_chunk_retries": 0})
    app = Celery("test", set_as_current=False)
    app.conf.task_always_eager = True  # a retry runs again at once
    with full_disk(sqlite_db, full=False, only="UPDATE job_items") as disk:
        service = SkippingService(strict, disk)
        service.fill_disk_on_call, service.free_disk_on_call = 1, 4  # three outages
        context = _ChunkContext(strict, sqlite_db, service)
        try:
            register_tasks(app, lambda: context).apply(args=[job_id, 0, 2]).get()
        finally:
            context.loop.close()
            app.close()
    assert disk.failures == 3
    assert _status(sqlite_db, job_id) == ("done", 2, None)
