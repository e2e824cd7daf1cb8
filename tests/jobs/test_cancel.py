"""Cancelling a job: a running one stops after the chunk being classified, keeps what it
stored, and no other chunk starts; a finished one cannot be cancelled."""

from __future__ import annotations

import asyncio

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
