"""Job leases of the in-process runner: a job whose process died is taken back without a
restart; a live process's job never is; a stopping runner gives its job back at once.

``cartag serve --workers N`` replaces a dead process without restarting the others, and
several single-process servers may share a store: a killed process's job stayed
``running`` until the whole server restarted, and a starting server took back the jobs
of the live ones. The model is a stub that can hold a chunk open (the subject is the
runner's bookkeeping).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import time
from typing import Any

from cartag.clock import FakeClock, SystemClock
from cartag.jobs.runner import JobRunner
from cartag.settings import Settings
from cartag.store import jobs as job_repo
from cartag.store.db import Database
from tests.support.fakes import SkippingService

LEASE_S = 0.4


def _job(db: Database, n: int = 4) -> str:
    items = [(f"https://cdn.example/{i}.jpg", None) for i in range(n)]
    with db.write() as session:
        return job_repo.create_job(
            session, advertiser_id="a", items=items, callback_url=None, now=FakeClock().now()
        ).id


def _runner(db: Database, service: SkippingService, clock: Any) -> JobRunner:
    return JobRunner(
        db,
        service,
        clock,
        chunk_size=2,
        poll_interval_s=0.02,
        lease_s=LEASE_S,  # type: ignore[arg-type]
    )


def _job_row(db: Database, job_id: str) -> tuple[str, str | None]:
    with db.read() as session:
        job = job_repo.get_job(session, job_id)
        return job.status, job.error


async def _until(check: Any, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.02)


def test_a_job_whose_process_died_is_taken_back_without_a_restart(
    settings: Settings, db: Database
) -> None:
    clock = FakeClock()
    job_id = _job(db)
    with db.write() as session:  # a process claims it, then is killed: no more heartbeats
        assert job_repo.claim_next_job(session, clock.now()) is not None

    async def scenario() -> None:
        service = SkippingService(settings)
        runner = _runner(db, service, clock)
        runner.start()  # its heartbeat is recent: not taken yet
        await asyncio.sleep(3 * LEASE_S)
        assert _job_row(db, job_id)[0] == "running" and service.calls == 0
        clock.advance(2 * LEASE_S)  # the lease runs out
        await _until(lambda: _job_row(db, job_id)[0] == "done")
        await runner.stop()

    asyncio.run(scenario())
    assert _job_row(db, job_id) == ("done", None)  # the "waiting to retry" note is gone


def test_a_live_runners_job_is_never_taken_and_a_stopping_runner_gives_it_back(
    settings: Settings, db: Database
) -> None:
    job_id = _job(db)

    async def scenario() -> None:
        held = SkippingService(settings, hold=True)
        first = _runner(db, held, SystemClock())
        first.start()
        await _until(lambda: held.calls == 1)  # running its first chunk, held open
        other = SkippingService(settings)
        second = _runner(db, other, SystemClock())
        second.start()
        await asyncio.sleep(4 * LEASE_S)  # well past the lease: the first one beats
        assert _job_row(db, job_id)[0] == "running" and other.calls == 0
        await first.stop()  # e.g. SIGTERM: its job goes back to the queue at once
        await _until(lambda: _job_row(db, job_id)[0] == "done")
        assert other.calls == 2  # both chunks: nothing of the stopped chunk was stored
        await second.stop()

    asyncio.run(scenario())
    assert _job_row(db, job_id) == ("done", None)


def test_a_stopped_runners_job_waits_in_the_queue_unblamed(
    settings: Settings, db: Database
) -> None:
    job_id = _job(db)

    async def scenario() -> None:
        held = SkippingService(settings, hold=True)
        runner = _runner(db, held, SystemClock())
        runner.start()
        await _until(lambda: held.calls == 1)
        await runner.stop()

    asyncio.run(scenario())
    assert _job_row(db, job_id) == ("queued", None)
    with db.read() as session:
        assert job_repo.get_job(session, job_id).started_at is not None
    assert dt.timedelta(seconds=LEASE_S) > dt.timedelta(0)
