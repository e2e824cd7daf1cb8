"""Job callbacks go through a failing receiver: retried with backoff, bounded, never lost.

The receiver is a real local HTTP server and the callbacks go through the real fetcher.
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Iterator
from typing import Any

import pytest

from cartag.clock import FakeClock
from cartag.jobs import delivery
from cartag.jobs.delivery import CallbackPolicy
from cartag.jobs.runner import JobRunner
from cartag.jobs.sweeper import CallbackSweeper
from cartag.net.fetch import Fetcher
from cartag.settings import Settings
from cartag.store import jobs as job_repo
from cartag.store.db import Database
from tests.support.factories import finished_job
from tests.support.fakes import CallbackOnlyService
from tests.support.http_server import ImageServer


@pytest.fixture
def server() -> Iterator[ImageServer]:
    with ImageServer() as srv:
        yield srv


def _finished_job(db: Database, callback_url: str, callback_status: str | None = None) -> str:
    """A done job of one item, as a process leaves it that stopped before its callback."""
    return finished_job(db, callback_url, callback_status=callback_status, now=FakeClock().now())


def _send(settings: Settings, db: Database, job_id: str, attempts: int = 4) -> str | None:
    async def send() -> str | None:
        async with Fetcher(settings) as fetcher:
            return await delivery.send_callback(
                db,
                fetcher,
                job_id,
                clock=FakeClock(),
                policy=CallbackPolicy(attempts=attempts, backoff_s=0.01),
            )

    return asyncio.run(send())


def _job(db: Database, job_id: str) -> tuple[str | None, str | None]:
    with db.read() as session:
        job = job_repo.get_job(session, job_id)
        return job.callback_status, job.callback_url


def test_a_receiver_that_fails_for_a_while_gets_the_callback(
    settings: Settings, db: Database, server: ImageServer
) -> None:
    server.add_json_sink("/hook")
    server.add_status("/hook", 503, times=2)
    job_id = _finished_job(db, server.url("/hook") + "?token=s3cr3t")
    assert _send(settings, db, job_id) == "delivered:200"
    assert server.requests_for("/hook") == 3
    (payload,) = server.received("/hook")
    assert payload["job_id"] == job_id and payload["status"] == "done"
    status, url = _job(db, job_id)
    assert status == "delivered:200" and url is not None and "s3cr3t" not in url


def test_retries_are_bounded_and_only_for_failures_that_may_pass(
    settings: Settings, db: Database, server: ImageServer
) -> None:
    server.add_status("/down", 500)
    down = _finished_job(db, server.url("/down") + "?token=s3cr3t")
    assert _send(settings, db, down, attempts=3) == "failed:http_500"
    assert server.requests_for("/down") == 3
    status, url = _job(db, down)
    assert status == "failed:http_500" and url is not None and "s3cr3t" not in url

    # A 4xx or a redirect will not change by waiting: one attempt.
    server.add_status("/gone", 410)
    server.add_redirect("/moved", server.url("/elsewhere"), status=308)
    for path, outcome in (("/gone", "failed:http_410"), ("/moved", "failed:redirect")):
        assert _send(settings, db, _finished_job(db, server.url(path))) == outcome
        assert server.requests_for(path) == 1


def test_a_receiver_that_refuses_connections_is_retried(settings: Settings, db: Database) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # closed again: connections are refused
    job_id = _finished_job(db, f"http://127.0.0.1:{port}/hook")
    assert _send(settings, db, job_id, attempts=2) == "failed:connection_error"


def test_callbacks_a_stopped_server_did_not_send_are_sent_when_it_starts(
    settings: Settings, sqlite_db: Database, server: ImageServer
) -> None:
    # Killed after the job was done but before its callback went out, and killed while
    # waiting to retry one: both are sent at the next start; a delivered one is not.
    server.add_json_sink("/hook")
    never = _finished_job(sqlite_db, server.url("/hook"))
    cut_off = _finished_job(sqlite_db, server.url("/hook"), "retrying:http_503")
    delivered = _finished_job(sqlite_db, server.url("/hook"), "delivered:200")

    async def restart() -> None:
        async with Fetcher(settings) as fetcher:
            runner = JobRunner(
                sqlite_db,
                CallbackOnlyService(settings, fetcher),  # type: ignore[arg-type]
                FakeClock(),
                poll_interval_s=0.01,
                callback_backoff_s=0.01,
            )
            runner.start()
            await asyncio.sleep(0)
            await runner.wait_for_callbacks()
            await runner.stop()

    asyncio.run(restart())
    assert sorted(p["job_id"] for p in server.received("/hook")) == sorted([never, cut_off])
    assert _job(sqlite_db, never)[0] == _job(sqlite_db, cut_off)[0] == "delivered:200"
    assert _job(sqlite_db, delivered)[0] == "delivered:200"
    with sqlite_db.read() as session:
        assert job_repo.pending_callbacks(session) == []


class _WorkerContext:
    """What the chunk task uses of a worker process (no model: the job is done)."""

    def __init__(self, settings: Settings, db: Database) -> None:
        self.settings = settings
        self.db = db
        self.clock = FakeClock()
        self.loop = asyncio.new_event_loop()
        self.fetcher = Fetcher(settings)
        self.service = CallbackOnlyService(settings, self.fetcher)
        self.callbacks: CallbackSweeper | None = None

    def follow_production(self) -> None:
        """The model never changes here."""

    def run(self, coro: Any) -> Any:
        return self.loop.run_until_complete(coro)

    def close(self) -> None:
        self.run(self.fetcher.aclose())
        self.loop.close()


def test_a_redelivered_chunk_of_a_done_job_sends_the_callback_a_killed_worker_did_not(
    settings: Settings, sqlite_db: Database, server: ImageServer
) -> None:
    from celery import Celery

    from cartag.jobs.tasks import register_tasks

    server.add_json_sink("/hook")
    job_id = _finished_job(sqlite_db, server.url("/hook"))
    context = _WorkerContext(settings, sqlite_db)
    app = Celery("test", set_as_current=False)
    app.conf.task_always_eager = True
    try:
        task = register_tasks(app, lambda: context)
        task.apply(args=[job_id, 0, 1]).get()
        assert [p["job_id"] for p in server.received("/hook")] == [job_id]
        task.apply(args=[job_id, 0, 1]).get()  # delivered: not sent again
        assert len(server.received("/hook")) == 1
    finally:
        context.close()
        app.close()


def test_a_chunk_hands_its_callback_to_the_workers_callback_thread(
    settings: Settings, sqlite_db: Database, server: ImageServer
) -> None:
    # A receiver that takes 2 s: sent on the chunk's own loop, it held up the worker's
    # next chunk for all its attempts (one hanging receiver: 80-130 s per job).
    from celery import Celery

    from cartag.jobs.tasks import register_tasks

    server.add_slow("/hook", 2.0, b"{}", content_type="application/json")
    context = _WorkerContext(settings, sqlite_db)
    sweeper = CallbackSweeper(settings, sqlite_db, context.clock, interval_s=3600)
    sweeper.start()
    context.callbacks = sweeper
    app = Celery("test", set_as_current=False)
    app.conf.task_always_eager = True
    try:
        deadline = time.monotonic() + 10
        while sweeper.sweeps < 1:  # the sweep at start is over: it will not send this one
            assert time.monotonic() < deadline
            time.sleep(0.01)
        job_id = _finished_job(sqlite_db, server.url("/hook"))
        task = register_tasks(app, lambda: context)
        started = time.monotonic()
        task.apply(args=[job_id, 0, 1]).get()
        assert time.monotonic() - started < 1.5  # it did not wait for the receiver
        while _callback_status(sqlite_db, job_id) != "delivered:200":
            assert time.monotonic() < deadline + 10
            time.sleep(0.05)
    finally:
        sweeper.stop()
        context.close()
        app.close()


def _callback_status(db: Database, job_id: str) -> str | None:
    with db.read() as session:
        return job_repo.visible_callback_status(job_repo.get_job(session, job_id).callback_status)
