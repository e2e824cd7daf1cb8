"""Which chunks a runner runs: a cancelled job's stop after the one being classified (what
it stored stays; a finished job cannot be cancelled), and a big job steps aside after a
chunk for a job that has not started."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from cartag.clock import FakeClock
from cartag.errors import ConflictError, NotFoundError
from cartag.jobs.runner import JobRunner
from cartag.settings import Settings
from cartag.store import jobs as job_repo
from cartag.store.db import Database
from tests.support.fakes import SkippingService


def test_a_running_job_stops_after_its_chunk(settings: Settings, db: Database) -> None:
    with db.write() as session:
        job_id = job_repo.create_job(
            session,
            advertiser_id="a",
            items=[(f"https://cdn.example/{i}.jpg", None) for i in range(6)],
            callback_url=None,
            now=FakeClock().now(),
        ).id

    async def scenario() -> None:
        service = SkippingService(settings, hold=True)
        runner = JobRunner(db, service, FakeClock(), chunk_size=2, poll_interval_s=0.02)  # type: ignore[arg-type]
        runner.start()
        while service.calls < 1:  # the first chunk is being classified
            await asyncio.sleep(0.01)
        with db.write() as session:
            job_repo.cancel_job(session, job_id, now=FakeClock().now(), by="ops")
        service.go.set()
        for _ in range(50):  # time for a second chunk to start, if one would
            await asyncio.sleep(0.01)
        await runner.stop()
        assert service.calls == 1

    asyncio.run(scenario())
    with db.read() as session:
        job = job_repo.get_job(session, job_id)
        assert (job.status, job.done, job.error) == ("failed", 2, "cancelled by ops")
        with pytest.raises(ConflictError, match="failed already"):
            job_repo.cancel_job(session, job_id, now=FakeClock().now(), by="ops")
        with pytest.raises(NotFoundError):
            job_repo.cancel_job(session, "nope", now=FakeClock().now(), by="ops")


class _Recording(SkippingService):
    """Records whose chunk each call was; submits a small job during the big one's first."""

    def __init__(self, settings: Settings, db: Database) -> None:
        super().__init__(settings)
        self.db = db
        self.order: list[str] = []

    async def classify(self, advertiser_id: str, requests: Any, stats: Any = None) -> Any:
        self.order.append(advertiser_id)
        if len(self.order) == 1:
            _submit(self.db, "small", 1)
        return await super().classify(advertiser_id, requests, stats)


def _submit(db: Database, advertiser: str, n: int) -> str:
    with db.write() as session:
        return job_repo.create_job(
            session,
            advertiser_id=advertiser,
            items=[(f"https://cdn.example/{advertiser}/{i}.jpg", None) for i in range(n)],
            callback_url=None,
            now=FakeClock().now(),
        ).id


def test_a_small_job_does_not_wait_for_a_big_one_submitted_before_it(
    settings: Settings, db: Database
) -> None:
    # A 1-image job waited 18.7 s behind a 30,000-image one: the runner ran one job
    # to its end. It now steps aside after a chunk when a job that has not started waits.
    big = _submit(db, "big", 8)
    service = _Recording(settings, db)
    runner = JobRunner(db, service, FakeClock(), chunk_size=2, poll_interval_s=0.01)  # type: ignore[arg-type]
    assert asyncio.run(runner.run_until_idle()) == 3  # big (stepped aside), small, big
    assert service.order == ["big", "small", "big", "big", "big"]  # each big chunk once
    with db.read() as session:
        assert job_repo.get_job(session, big).status == "done"
        assert job_repo.get_job(session, big).done == 8
