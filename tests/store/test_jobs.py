from __future__ import annotations

import datetime as dt

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


def test_only_running_jobs_whose_heartbeat_stopped_are_requeued(db: Database) -> None:
    minute = dt.timedelta(minutes=1)
    ids = []
    with db.write() as session:
        for _ in range(3):
            ids.append(
                job_repo.create_job(
                    session,
                    advertiser_id="a",
                    items=[("https://a/1.jpg", None)],
                    callback_url=None,
                    now=NOW,
                ).id
            )
        for _ in range(2):
            job_repo.claim_next_job(session, NOW)  # ids[0] and ids[1] run; ids[2] waits
    with db.write() as session:
        assert job_repo.beat(session, ids[1], NOW + 2 * minute)
        assert not job_repo.beat(session, ids[2], NOW + 2 * minute)  # not running
    before = NOW + minute  # a lease of 1 min, 2 min after the claims
    with db.read() as session:
        assert job_repo.stale_running(session, before) == [ids[0]]
    with db.write() as session:
        # ids[0] beat again meanwhile (its process was only slow): left alone.
        job_repo.beat(session, ids[0], NOW + 2 * minute)
        assert job_repo.requeue_stale(session, [ids[0]], before) == 0
    with db.write() as session:
        assert job_repo.requeue_stale(session, [ids[0]], NOW + 3 * minute) == 1
    with db.read() as session:
        job = job_repo.get_job(session, ids[0])
        assert job.status == job_repo.QUEUED and "no heartbeat" in (job.error or "")
        assert job_repo.get_job(session, ids[1]).status == job_repo.RUNNING
