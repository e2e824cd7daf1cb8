"""One process sends each callback: it claims it in the database first, for a lease.

Two claimers interleaved explicitly, a dead process's claim taken over after the lease
(the fake clock moves), the processes of ``cartag serve --workers N`` and a Celery
worker's sweeper sending what no process is sending, each exactly once. The receiver is a
real local HTTP server, reached through the real fetcher.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text

from cartag.clock import FakeClock
from cartag.jobs import delivery
from cartag.jobs.delivery import CallbackPolicy
from cartag.jobs.dispatch import build_dispatcher
from cartag.jobs.runner import JobRunner
from cartag.jobs.sweeper import CallbackSweeper
from cartag.net.fetch import Fetcher
from cartag.settings import Settings
from cartag.store import jobs as job_repo
from cartag.store.db import Database
from tests.support.factories import finished_job
from tests.support.fakes import CallbackOnlyService
from tests.support.http_server import ImageServer

LEASE_S = delivery.DEFAULT_POLICY.lease_s


@pytest.fixture
def server() -> Iterator[ImageServer]:
    with ImageServer() as srv:
        yield srv


def _finished_job(
    db: Database, clock: FakeClock, callback_url: str, callback_status: str | None = None
) -> str:
    """A done job of one item whose callback was not sent (or is as ``callback_status`` says)."""
    return finished_job(db, callback_url, callback_status=callback_status, now=clock.now())


def _status(db: Database, job_id: str) -> str | None:
    with db.read() as session:
        return job_repo.get_job(session, job_id).callback_status


def _claim(db: Database, job_id: str, clock: FakeClock) -> str | None:
    """What a process does before sending: claim the callback for the default lease."""
    until = clock.now() + dt.timedelta(seconds=LEASE_S)
    with db.write() as session:
        return job_repo.claim_callback(session, job_id, until=until, now=clock.now())


def _wait_for(condition: Callable[[], bool], timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


async def _received(server: ImageServer, count: int, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while len(server.received("/hook")) < count:
        assert time.monotonic() < deadline, f"{len(server.received('/hook'))} of {count} sent"
        await asyncio.sleep(0.01)


def test_the_lease_is_a_few_minutes() -> None:
    # 5 attempts of at most 2 x 10 s, 2 + 4 + 8 + 16 s apart, and a minute of slack.
    assert LEASE_S == 5 * 20 + 30 + 60


def test_of_two_claimers_that_saw_the_same_status_exactly_one_wins(
    db: Database, server: ImageServer
) -> None:
    clock = FakeClock()
    job_id = _finished_job(db, clock, server.url("/hook"))
    with db.read() as session:
        seen_by_a = job_repo.get_job(session, job_id).callback_status
    with db.read() as session:
        seen_by_b = job_repo.get_job(session, job_id).callback_status
    assert seen_by_a is seen_by_b is None
    until = clock.now() + dt.timedelta(seconds=LEASE_S)
    claim_a = job_repo.claim_status(job_repo.CALLBACK_SENDING, until)
    claim_b = job_repo.claim_status(job_repo.CALLBACK_SENDING, until)
    with db.write() as session:
        assert job_repo.take_callback_claim(session, job_id, seen=seen_by_a, claim=claim_a)
    with db.write() as session:
        assert not job_repo.take_callback_claim(session, job_id, seen=seen_by_b, claim=claim_b)
    assert _status(db, job_id) == claim_a
    # Anyone coming later finds it held.
    assert _claim(db, job_id, clock) is None


@pytest.mark.services
def test_on_postgresql_the_second_claimer_waits_for_the_first_then_loses(
    server: ImageServer, tmp_path: Path
) -> None:
    from tests.support.db import fresh_database

    with fresh_database("postgresql", tmp_path) as db:
        clock = FakeClock()
        job_id = _finished_job(db, clock, server.url("/hook"))
        until = clock.now() + dt.timedelta(seconds=LEASE_S)
        claim_a = job_repo.claim_status(job_repo.CALLBACK_SENDING, until)
        claim_b = job_repo.claim_status(job_repo.CALLBACK_SENDING, until)
        outcome: dict[str, Any] = {}

        def second() -> None:
            with db.write() as session:
                outcome["pid"] = session.scalar(text("SELECT pg_backend_pid()"))
                outcome["won"] = job_repo.take_callback_claim(
                    session, job_id, seen=None, claim=claim_b
                )

        with db.write() as first:
            assert job_repo.take_callback_claim(first, job_id, seen=None, claim=claim_a)
            thread = threading.Thread(target=second)
            thread.start()

            def waiting_for_the_row() -> bool:
                if "pid" not in outcome:
                    return False
                with db.read() as session:
                    event = session.scalar(
                        text("SELECT wait_event_type FROM pg_stat_activity WHERE pid = :pid"),
                        {"pid": outcome["pid"]},
                    )
                return event == "Lock"

            # The second UPDATE is blocked on the row the first changed, not committed yet.
            _wait_for(waiting_for_the_row)
        thread.join(10)
        assert outcome["won"] is False
        assert _status(db, job_id) == claim_a


def test_two_senders_at_once_send_one_callback(
    settings: Settings, db: Database, server: ImageServer
) -> None:
    # A worker handed the finished job's chunk again while another sends the callback.
    server.add_json_sink("/hook")
    job_id = _finished_job(db, FakeClock(), server.url("/hook"))

    async def both() -> list[str | None]:
        async with Fetcher(settings) as fetcher:
            return list(
                await asyncio.gather(
                    *(
                        delivery.send_callback(db, fetcher, job_id, clock=FakeClock())
                        for _ in range(2)
                    )
                )
            )

    assert sorted(asyncio.run(both()), key=str) == [None, "delivered:200"]
    assert [p["job_id"] for p in server.received("/hook")] == [job_id]
    assert _status(db, job_id) == "delivered:200"


def test_a_dead_process_claim_is_taken_over_after_the_lease(
    settings: Settings, db: Database, server: ImageServer
) -> None:
    server.add_json_sink("/hook")
    clock = FakeClock()
    sending = _finished_job(db, clock, server.url("/hook"))
    retrying = _finished_job(db, clock, server.url("/hook"))
    # Both claimed by a process that then died: one during its first attempt, one
    # between attempts.
    dead_claim = _claim(db, sending, clock)
    assert dead_claim is not None and dead_claim.startswith("sending:@")
    with db.write() as session:
        retrying_claim = job_repo.claim_status(
            "retrying:http_503", clock.now() + dt.timedelta(seconds=LEASE_S)
        )
        job_repo.set_callback_status(session, retrying, retrying_claim)

    def sweep() -> int:
        async def run() -> int:
            async with Fetcher(settings) as fetcher:
                return await delivery.send_pending_callbacks(
                    db, fetcher, clock=clock, policy=CallbackPolicy(backoff_s=0.01)
                )

        return asyncio.run(run())

    assert sweep() == 0
    clock.advance(LEASE_S - 1)
    assert sweep() == 0
    assert server.received("/hook") == []
    clock.advance(1)
    assert sweep() == 2
    assert sorted(p["job_id"] for p in server.received("/hook")) == sorted([sending, retrying])
    assert _status(db, sending) == _status(db, retrying) == "delivered:200"
    # The dead process, back to life, no longer holds it: it cannot overwrite the outcome.
    with db.write() as session:
        assert not job_repo.take_callback_claim(
            session, sending, seen=dead_claim, claim="failed:http_503"
        )
    assert _status(db, sending) == "delivered:200"
    assert sweep() == 0
    assert len(server.received("/hook")) == 2


def test_a_stopped_sender_lets_go_of_its_claim_at_once(
    settings: Settings, sqlite_db: Database, server: ImageServer
) -> None:
    server.add_status("/hook", 503)
    job_id = _finished_job(sqlite_db, FakeClock(), server.url("/hook"))

    async def stop_while_waiting_to_retry() -> None:
        async with Fetcher(settings) as fetcher:
            task = asyncio.create_task(
                delivery.send_callback(
                    sqlite_db,
                    fetcher,
                    job_id,
                    clock=FakeClock(),
                    policy=CallbackPolicy(attempts=3, backoff_s=60),
                )
            )
            while not (_status(sqlite_db, job_id) or "").startswith("retrying:"):
                await asyncio.sleep(0.01)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task

    asyncio.run(stop_while_waiting_to_retry())
    # The reason stays, the claim goes: the next sweep anywhere takes it without waiting.
    assert _status(sqlite_db, job_id) == "retrying:http_503"
    assert _claim(sqlite_db, job_id, FakeClock()) is not None


def test_every_process_of_serve_workers_sweeps_and_each_callback_is_sent_once(
    settings: Settings, db: Database, server: ImageServer
) -> None:
    server.add_json_sink("/hook")
    clock = FakeClock()
    left = [_finished_job(db, clock, server.url("/hook")) for _ in range(4)]
    left.append(_finished_job(db, clock, server.url("/hook"), "retrying:http_503"))
    processes = settings.model_copy(update={"serve_processes": 3})
    later: list[str] = []

    async def serve() -> None:
        async with Fetcher(processes) as fetcher:
            runners = []
            for _ in range(3):
                runner = build_dispatcher(
                    processes, db, CallbackOnlyService(processes, fetcher), clock
                )  # type: ignore[arg-type]
                assert isinstance(runner, JobRunner)
                runner.poll_interval_s = 0.01
                runner.callback_sweep_s = 0.0
                runners.append(runner)
            for runner in runners:
                runner.start()
            await _received(server, len(left))
            # A job finished by a process that died before its callback: a periodic
            # sweep of one of the others sends it.
            later.append(_finished_job(db, clock, server.url("/hook")))
            await _received(server, len(left) + 1)
            for _ in range(5):  # more sweeps: nothing is sent again
                await asyncio.sleep(0.02)
            for runner in runners:
                await runner.wait_for_callbacks()
                await runner.stop()

    asyncio.run(serve())
    sent = [p["job_id"] for p in server.received("/hook")]
    assert sorted(sent) == sorted([*left, *later])
    assert all(_status(db, job_id) == "delivered:200" for job_id in sent)


def test_a_celery_worker_sweeps_at_start_and_periodically(
    settings: Settings, sqlite_db: Database, server: ImageServer
) -> None:
    server.add_json_sink("/hook")
    clock = FakeClock()
    at_start = _finished_job(sqlite_db, clock, server.url("/hook"))
    sweeper = CallbackSweeper(
        settings,
        sqlite_db,
        clock,
        interval_s=0.01,
        policy=CallbackPolicy.from_settings(settings, backoff_s=0.01),
    )
    sweeper.start()
    try:
        _wait_for(lambda: len(server.received("/hook")) == 1)
        later = _finished_job(sqlite_db, clock, server.url("/hook"))
        _wait_for(lambda: len(server.received("/hook")) == 2)
        sweeps = sweeper.sweeps
        _wait_for(lambda: sweeper.sweeps > sweeps + 2)
    finally:
        sweeper.stop()
    assert [p["job_id"] for p in server.received("/hook")] == [at_start, later]


def test_claims_keep_the_status_readable_and_short() -> None:
    until = dt.datetime(2026, 1, 1, 0, 3, 10, tzinfo=dt.UTC)
    claim = job_repo.claim_status("retrying:connection_error", until, token="ab12cd34")
    assert claim == f"retrying:connection_error@{int(until.timestamp())}.ab12cd34"
    assert job_repo.callback_claimed_until(claim) == until
    assert job_repo.visible_callback_status(claim) == "retrying:connection_error"
    assert len(job_repo.claim_status("retrying:" + "x" * 80, until)) == 64
    # Outcomes and statuses from before claims carry none.
    # A first attempt reads as not sent yet, as before claims.
    assert job_repo.visible_callback_status(job_repo.claim_status("sending:", until)) is None
    for status in ("delivered:200", "failed:http_500", "retrying:http_503", None):
        assert job_repo.callback_claimed_until(status) is None
        assert job_repo.visible_callback_status(status) == status
