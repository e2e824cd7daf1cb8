"""Advertiser settings (re-classification opt-in) and the images each advertiser uses."""

from __future__ import annotations

from cartag.clock import FakeClock
from cartag.pipeline import fixes as fix_service
from cartag.store import advertisers as repo
from cartag.store import jobs as job_repo
from cartag.store.db import Database
from tests.support.factories import NOW, add_image


def test_advertiser_settings(db: Database) -> None:
    with db.write() as session:
        repo.set_advertiser(session, "42", reclassify_on_promote=True, now=NOW)
        repo.set_advertiser(session, "7", reclassify_on_promote=True, now=NOW)
        row = repo.set_advertiser(session, "7", reclassify_on_promote=False, now=NOW)
        assert row.reclassify_on_promote is False
    with db.read() as session:
        assert [r.advertiser_id for r in repo.list_advertisers(session)] == ["42", "7"]
        assert repo.reclassify_advertisers(session) == ["42"]
        assert repo.opted_in(session, "42") and not repo.opted_in(session, "7")
        assert not repo.opted_in(session, "unknown")


def test_advertiser_images_come_from_classify_jobs_and_fixes(db: Database) -> None:
    seen, fixed, in_job, other = (add_image(db) for _ in range(4))
    with db.write() as session:
        repo.record_advertiser_images(session, "42", [seen.image_key], NOW)
        repo.record_advertiser_images(session, "42", [seen.image_key], NOW)  # upsert
        repo.record_advertiser_images(session, "9", [other.image_key], NOW)
        fix_service.apply_fix(
            session,
            image_key=fixed.image_key,
            advertiser_id="42",
            scope="advertiser",
            user="alice",
            image_type=None,
            color="Blue",
            comment=None,
            clock=FakeClock(NOW),
        )
        job = job_repo.create_job(
            session, advertiser_id="42", items=[(in_job.url, None)], callback_url=None, now=NOW
        )
        job_repo.store_results(session, job.id, {0: {"image_key": in_job.image_key}})
    with db.read() as session:
        keys = repo.advertiser_image_keys(session, "42")
    assert keys == {seen.image_key, fixed.image_key, in_job.image_key}
