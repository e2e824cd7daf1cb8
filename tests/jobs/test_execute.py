"""Job chunks: each item's result stored once, each image classified once, locks honoured."""

from __future__ import annotations

import asyncio
import datetime as dt
import subprocess
import sys
from collections.abc import Iterator

import pytest

from cartag.clock import FakeClock
from cartag.errors import ConfigError, QueueUnavailableError
from cartag.jobs import execute
from cartag.jobs.dispatch import CeleryDispatcher, InMemoryChunkSender, build_dispatcher
from cartag.jobs.runner import JobRunner
from cartag.models.classifier import Classifier
from cartag.net.fetch import Fetcher
from cartag.pipeline.classify import ClassifyService
from cartag.pipeline.results import ImageRequest
from cartag.settings import Settings
from cartag.store import jobs as job_repo
from cartag.store.db import Database
from cartag.store.tables import ImageRow
from tests.support.http_server import ImageServer
from tests.support.images import jpeg_bytes

pytestmark = pytest.mark.slow


@pytest.fixture
def server() -> Iterator[ImageServer]:
    with ImageServer() as srv:
        yield srv


@pytest.fixture
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    loop = asyncio.new_event_loop()
    yield loop
    loop.close()


@pytest.fixture
def service(
    settings: Settings, db: Database, classifier: Classifier, loop: asyncio.AbstractEventLoop
) -> Iterator[ClassifyService]:
    fetcher = Fetcher(settings)
    svc = ClassifyService(settings, db, fetcher, classifier, FakeClock())
    yield svc
    svc.close()
    loop.run_until_complete(fetcher.aclose())


def _job(db: Database, server: ImageServer, n: int) -> str:
    items = []
    for i in range(n):
        server.add_file(f"/{i}.jpg", jpeg_bytes(color=(30 * i % 255, 90, 200 - 15 * i)))
        items.append((server.url(f"/{i}.jpg"), None))
    items.append((server.url("/missing.jpg"), None))
    with db.write() as session:
        return job_repo.create_job(
            session, advertiser_id="a", items=items, callback_url=None, now=FakeClock().now()
        ).id


def test_chunks_store_every_result_once_and_never_reclassify(
    db: Database, service: ClassifyService, server: ImageServer, loop: asyncio.AbstractEventLoop
) -> None:
    job_id = _job(db, server, 5)
    clock = FakeClock()
    reports = [
        loop.run_until_complete(execute.run_job_chunk(db, service, clock, job_id, start, stop))
        for start, stop in execute.chunk_bounds(6, 4)
    ]
    assert [(r.claimed, r.stored, r.held_elsewhere) for r in reports] == [(4, 4, 0), (2, 2, 0)]
    assert sum(r.model_runs for r in reports) == 5
    with db.read() as session:
        assert job_repo.get_job(session, job_id).status == job_repo.RUNNING
    # A redelivered chunk finds nothing pending: no new result, no model run.
    again = loop.run_until_complete(execute.run_job_chunk(db, service, clock, job_id, 0, 4))
    assert (again.claimed, again.stored, again.model_runs) == (0, 0, 0)
    assert execute.finish_if_complete(db, clock, job_id) is True
    assert execute.finish_if_complete(db, clock, job_id) is False  # one caller sends the callback
    with db.read() as session:
        job = job_repo.get_job(session, job_id)
        results = job_repo.job_results(session, job_id)
        images = session.query(ImageRow).all()
    assert job.status == job_repo.DONE and job.done == 6
    assert [r["status"] for r in results if r] == ["classified"] * 5 + ["skipped"]
    assert len(images) == 5
    # Stored once: a second classification would have moved updated_at past created_at.
    assert all(row.created_at == row.updated_at for row in images)
    after_done = loop.run_until_complete(execute.run_job_chunk(db, service, clock, job_id, 0, 6))
    assert after_done.job_status == job_repo.DONE and after_done.claimed == 0


def test_an_item_classified_before_a_crash_is_answered_from_the_cache(
    db: Database, service: ClassifyService, server: ImageServer, loop: asyncio.AbstractEventLoop
) -> None:
    """A worker that stored the images but died before the job results: no second model run."""
    job_id = _job(db, server, 3)
    urls = [server.url(f"/{i}.jpg") for i in range(3)]
    loop.run_until_complete(service.classify("a", [ImageRequest(u) for u in urls]))
    report = loop.run_until_complete(execute.run_job_chunk(db, service, FakeClock(), job_id, 0, 4))
    assert (report.claimed, report.stored, report.model_runs) == (4, 4, 0)
    with db.read() as session:
        statuses = [r["status"] for r in job_repo.job_results(session, job_id) if r]
    assert statuses == ["cached"] * 3 + ["skipped"]


@pytest.mark.services
@pytest.mark.parametrize("db", ["postgresql"], indirect=True)  # row locks are PostgreSQL's
def test_items_locked_by_another_worker_are_skipped_then_taken_when_released(
    service: ClassifyService, server: ImageServer, loop: asyncio.AbstractEventLoop
) -> None:
    db = service.db
    assert db.dialect == "postgresql"
    job_id = _job(db, server, 3)
    clock = FakeClock()
    # Another worker is in the middle of items 0 and 1 (its transaction holds them).
    with db.write() as other:
        held = job_repo.claim_items(other, job_id, 0, 2, lock=True)
        assert [i.idx for i in held] == [0, 1]
        report = loop.run_until_complete(execute.run_job_chunk(db, service, clock, job_id, 0, 4))
        assert (report.claimed, report.stored, report.held_elsewhere) == (2, 2, 2)
        assert execute.finish_if_complete(db, clock, job_id) is False
    # Its connection went away (killed): the rows are free for the redelivered chunk.
    report = loop.run_until_complete(execute.run_job_chunk(db, service, clock, job_id, 0, 4))
    assert (report.claimed, report.stored, report.held_elsewhere) == (2, 2, 0)
    assert execute.finish_if_complete(db, clock, job_id) is True
    with db.read() as session:
        assert job_repo.get_job(session, job_id).done == 4


def test_celery_dispatcher_sends_one_task_per_chunk_and_resends_unfinished_jobs(
    db: Database, settings: Settings
) -> None:
    sender = InMemoryChunkSender()
    dispatcher = CeleryDispatcher(db, FakeClock(), sender, chunk_size=2)
    job = dispatcher.submit("a", [(f"https://cdn.test/{i}.jpg", None) for i in range(5)], None)
    assert sender.sent == [(job.id, 0, 2), (job.id, 2, 4), (job.id, 4, 5)]
    with db.write() as session:
        job_repo.store_results(session, job.id, {i: {"n": i} for i in range(5)})
    done = dispatcher.submit("a", [("https://cdn.test/x.jpg", None)], None)
    with db.write() as session:
        job_repo.store_results(session, done.id, {0: {"n": 0}})
        job_repo.finish_if_complete(session, done.id, FakeClock().now())
    pending = dispatcher.submit("b", [("https://cdn.test/y.jpg", None)], None)
    sender.sent.clear()
    dispatcher.start()
    # The first job has all its results (only not marked done yet): nothing to resend.
    assert sender.sent == [(pending.id, 0, 1)]


def test_dispatcher_follows_the_settings(settings: Settings, sqlite_db: Database) -> None:
    service = ClassifyService.__new__(ClassifyService)  # never used by the dispatcher itself
    assert isinstance(build_dispatcher(settings, sqlite_db, service, FakeClock()), JobRunner)
    with_broker = settings.model_copy(update={"broker_url": "redis://127.0.0.1:6379/13"})
    with pytest.raises(ConfigError, match="PostgreSQL"):
        build_dispatcher(with_broker, sqlite_db, service, FakeClock())


def test_the_api_does_not_load_celery_unless_configured() -> None:
    code = (
        "import sys; import cartag.api.app, cartag.cli; "
        "assert 'celery' not in sys.modules, 'celery imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.parametrize("processes", [1, 2])
def test_a_starting_server_takes_back_only_jobs_whose_heartbeat_stopped(
    settings: Settings,
    db: Database,
    service: ClassifyService,
    server: ImageServer,
    processes: int,
) -> None:
    # Another live server's job (it beat a moment ago) and a job whose process was
    # killed (no heartbeat for longer than the lease), whatever the number of processes.
    clock = FakeClock()
    alive, dead = _job(db, server, 1), _job(db, server, 1)
    with db.write() as session:
        for _ in range(2):
            assert job_repo.claim_next_job(session, clock.now() - dt.timedelta(minutes=5))
        job_repo.beat(session, alive, clock.now() - dt.timedelta(seconds=5))
    changed = settings.model_copy(update={"serve_processes": processes, "job_lease_s": 60.0})
    runner = build_dispatcher(changed, db, service, clock)
    assert isinstance(runner, JobRunner) and runner.lease_s == 60.0
    assert runner.requeue_stale() == 1
    with db.read() as session:
        assert job_repo.get_job(session, alive).status == job_repo.RUNNING
        assert job_repo.get_job(session, dead).status == job_repo.QUEUED


class _DeadBroker(InMemoryChunkSender):
    """A broker that cannot be reached after ``works`` chunks (kombu raises its own)."""

    def __init__(self, works: int = 0) -> None:
        super().__init__()
        self.works = works

    def send(self, job_id: str, start: int, stop: int) -> None:
        if len(self.sent) >= self.works:
            raise ConnectionRefusedError(111, "Connection refused")
        super().send(job_id, start, stop)


def test_a_job_the_broker_cannot_take_is_not_kept(db: Database) -> None:
    # It was committed, then a 500: an orphan the client's retry doubled.
    dispatcher = CeleryDispatcher(db, FakeClock(), _DeadBroker(works=1), chunk_size=2)
    with pytest.raises(QueueUnavailableError, match="send it again"):
        dispatcher.submit("a", [(f"https://cdn.test/{i}.jpg", None) for i in range(5)], None)
    with db.read() as session:
        assert job_repo.unfinished_jobs(session) == []


def test_an_unreachable_broker_at_start_is_logged_not_fatal(
    db: Database, caplog: pytest.LogCaptureFixture
) -> None:
    stored = CeleryDispatcher(db, FakeClock(), InMemoryChunkSender(), chunk_size=2)
    job = stored.submit("a", [(f"https://cdn.test/{i}.jpg", None) for i in range(3)], None)
    with db.write() as session:  # the first chunk is done: not sent again
        job_repo.store_results(session, job.id, {0: {"n": 0}, 1: {"n": 1}})
    CeleryDispatcher(db, FakeClock(), _DeadBroker(), chunk_size=2).start()
    assert "the next start of the API sends them" in caplog.text
    working = InMemoryChunkSender()
    CeleryDispatcher(db, FakeClock(), working, chunk_size=2).start()
    assert working.sent == [(job.id, 2, 3)]
