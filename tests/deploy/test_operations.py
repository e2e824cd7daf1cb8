"""The store's operational figures: per model version, cache hit rate per day, the job queue."""

from __future__ import annotations

import datetime as dt

import pytest

from cartag.deploy.monitor import Thresholds, build_report
from cartag.deploy.operations import build_ops
from cartag.store import jobs as job_repo
from cartag.store.db import Database
from tests.support.monitoring import FIRST, SWITCH, TODAY, seed_monitoring

NOW = dt.datetime.combine(TODAY, dt.time(15), dt.UTC)


def _job(db: Database, created: dt.datetime, status: str, images: int = 3) -> str:
    with db.write() as session:
        job = job_repo.create_job(
            session,
            advertiser_id="steady",
            items=[(f"https://cdn.example/{i}.jpg", None) for i in range(images)],
            callback_url=None,
            now=created,
        )
        if status == job_repo.RUNNING:
            job_repo.mark_running(session, job.id, created)
        elif status != job_repo.QUEUED:
            job_repo.finish_job(session, job.id, status=status, now=created)
        return job.id


def test_versions_cache_rate_and_jobs(db: Database) -> None:
    seed_monitoring(db)
    _job(db, NOW - dt.timedelta(minutes=10), job_repo.QUEUED, images=4)
    _job(db, NOW - dt.timedelta(minutes=2), job_repo.QUEUED)
    _job(db, NOW - dt.timedelta(hours=1), job_repo.RUNNING)
    _job(db, NOW - dt.timedelta(days=1), job_repo.DONE)
    _job(db, NOW - dt.timedelta(days=30), job_repo.FAILED)  # before the window
    since = SWITCH - dt.timedelta(days=2)
    with db.read() as session:
        report = build_report(session, since=since, until=TODAY, thresholds=Thresholds())
        ops = build_ops(session, report, NOW)

    assert [v.version for v in ops.versions] == ["m2", "m1"]  # the newest first
    for v in ops.versions:
        cells = [c for c in report.version_days if c.version == v.version]
        assert v.answers == sum(c.rate.classified for c in cells)
        assert v.fixes == sum(c.rate.fixes for c in cells)
    m2, m1 = ops.versions
    assert (m1.first_day, m1.last_day) == (since, SWITCH - dt.timedelta(days=1))
    assert (m2.first_day, m2.last_day) == (SWITCH, TODAY)
    # Every third answer of the seed came from the cache: 100 of 300, 16 of 50.
    assert ops.cache_daily[TODAY] == (316, 950)
    assert ops.cache_rate(TODAY) == pytest.approx(316 / 950)
    assert m2.cache_rate == pytest.approx(m2.cached / m2.answers)
    assert ops.cache_rate(FIRST - dt.timedelta(days=1)) is None

    jobs = ops.jobs
    assert (jobs.queued, jobs.running, jobs.pending_images) == (2, 1, 4 + 3 + 3)
    assert jobs.oldest_wait_s == 600
    assert (jobs.done, jobs.failed) == (1, 0)


def test_an_empty_store(db: Database) -> None:
    with db.read() as session:
        report = build_report(session, since=TODAY, until=TODAY, thresholds=Thresholds())
        ops = build_ops(session, report, NOW)
    assert ops.versions == [] and ops.cache_daily == {}
    assert ops.jobs.oldest_wait_s is None and ops.jobs.queued == 0
