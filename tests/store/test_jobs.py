from __future__ import annotations

from cartag.store import jobs as job_repo
from cartag.store.db import Database
from tests.support.factories import NOW


def test_job_items_store_results_once(db: Database) -> None:
    with db.write() as session:
        job = job_repo.create_job(
            session,
            advertiser_id="adv",
            items=[("https://a/1.jpg", None), ("https://a/2.jpg", "Red")],
            callback_url=None,
            now=NOW,
        )
    with db.write() as session:
        claimed = job_repo.claim_next_job(session, NOW)
        assert claimed is not None and claimed.id == job.id
        assert job_repo.claim_next_job(session, NOW) is None
    with db.write() as session:
        items = job_repo.claim_items(session, job.id, 0, 10, lock=False)
        assert [i.scrape_color for i in items] == [None, "Red"]
        assert job_repo.store_results(session, job.id, {0: {"n": 1}}) == 1
        # A second worker re-running item 0 must not overwrite it: only item 1 is stored.
        assert job_repo.store_results(session, job.id, {0: {"n": 2}, 1: {"n": 3}}) == 1
    with db.read() as session:
        assert job_repo.job_results(session, job.id) == [{"n": 1}, {"n": 3}]
        assert job_repo.get_job(session, job.id).done == 2


def test_running_jobs_are_requeued_after_a_restart(db: Database) -> None:
    with db.write() as session:
        job = job_repo.create_job(
            session,
            advertiser_id="a",
            items=[("https://a/1.jpg", None)],
            callback_url=None,
            now=NOW,
        )
        job_repo.claim_next_job(session, NOW)
    with db.write() as session:
        assert job_repo.requeue_running(session) == 1
    with db.read() as session:
        assert job_repo.get_job(session, job.id).status == job_repo.QUEUED
