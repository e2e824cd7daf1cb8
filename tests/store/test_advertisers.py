"""Advertiser settings (re-classification opt-in) and the images each advertiser uses."""

from __future__ import annotations

import datetime as dt

from cartag.clock import FakeClock
from cartag.pipeline import fixes as fix_service
from cartag.pipeline.fixes import Author
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
        assert [r.advertiser_id for r in repo.advertiser_summaries(session)] == ["42", "7"]
        assert repo.reclassify_advertisers(session) == ["42"]
        assert repo.opted_in(session, "42") and not repo.opted_in(session, "7")
        assert not repo.opted_in(session, "unknown")


def test_advertiser_images_come_from_classify_jobs_and_fixes(db: Database) -> None:
    seen, fixed, in_job, other = (add_image(db) for _ in range(4))
    with db.write() as session:
        repo.record_advertiser_images(session, "42", dict.fromkeys([seen.image_key]), NOW)
        repo.record_advertiser_images(session, "42", dict.fromkeys([seen.image_key]), NOW)  # upsert
        repo.record_advertiser_images(session, "9", dict.fromkeys([other.image_key]), NOW)
        fix_service.apply_fix(
            session,
            image_key=fixed.image_key,
            advertiser_id="42",
            scope="advertiser",
            author=Author("alice"),
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


def test_advertiser_summaries_count_images_and_overrides(db: Database) -> None:
    a, b, c = (add_image(db) for _ in range(3))
    later = NOW + dt.timedelta(hours=2)
    with db.write() as session:
        repo.record_advertiser_images(session, "42", dict.fromkeys([a.image_key, b.image_key]), NOW)
        repo.record_advertiser_images(session, "42", dict.fromkeys([a.image_key]), later)
        repo.record_advertiser_images(session, "7", dict.fromkeys([a.image_key]), NOW)
        repo.set_advertiser(session, "settings-only", reclassify_on_promote=True, now=NOW)
        for image, scope in ((b, "advertiser"), (c, "advertiser"), (a, "global")):
            fix_service.apply_fix(
                session,
                image_key=image.image_key,
                advertiser_id="42",
                scope=scope,
                author=Author("alice"),
                image_type="Stock",
                color=None,
                comment=None,
                clock=FakeClock(NOW),
            )
    with db.read() as session:
        summaries = repo.advertiser_summaries(session)
        only = repo.advertiser_summaries(session, ["7", "unknown"])
    assert [(s.advertiser_id, s.images, s.overrides) for s in summaries] == [
        ("42", 3, 2),  # c is 42's through its fix only
        ("7", 1, 0),
        ("settings-only", 0, 0),
    ]
    assert summaries[0].last_seen_at == later and summaries[2].last_seen_at is None
    assert summaries[2].reclassify_on_promote and summaries[2].settings_updated_at == NOW
    assert [s.advertiser_id for s in only] == ["7"]


def test_an_advertisers_images_and_who_uses_an_image(db: Database) -> None:
    seen, fixed, other = (add_image(db, confidence=0.5) for _ in range(3))
    with db.write() as session:
        repo.record_advertiser_images(session, "42", dict.fromkeys([seen.image_key]), NOW)
        repo.record_advertiser_images(session, "9", dict.fromkeys([other.image_key]), NOW)
        fix_service.apply_fix(
            session,
            image_key=fixed.image_key,
            advertiser_id="42",
            scope="advertiser",
            author=Author("alice"),
            image_type=None,
            color="Blue",
            comment=None,
            clock=FakeClock(NOW),
        )
    with db.read() as session:
        images = repo.advertiser_images(session, "42")
        assert {i.image_key: i.last_seen_at for i in images} == {
            seen.image_key: NOW,
            fixed.image_key: None,
        }
        assert images[0].confidence == 0.5 and images[0].model_version == "test-model"
        assert repo.uses_image(session, ["42"], fixed.image_key)
        assert repo.uses_image(session, ["1", "9"], other.image_key)
        assert not repo.uses_image(session, ["42"], other.image_key)
        assert not repo.uses_image(session, ["42"], "v1:unknown")


def test_advertiser_ids_are_the_summaries_ids_in_their_order(db: Database) -> None:
    """The fix index pages through these ids and counts only its page's: the same set and
    code-point order as the summaries on both databases (PostgreSQL collates otherwise)."""
    key = add_image(db).image_key
    with db.write() as session:
        for advertiser in ("b-2", "B-1", "a/x", "a-x", "ä-1", "Z"):
            repo.record_advertiser_images(session, advertiser, {key: None}, NOW)
        repo.set_advertiser(session, "settings-only", reclassify_on_promote=True, now=NOW)
    with db.write() as session:
        fix_service.apply_fix(
            session,
            image_key=key,
            advertiser_id="fixed-only",
            author=Author("rita"),
            scope="advertiser",
            image_type="Stock",
            color=None,
            comment=None,
            clock=FakeClock(NOW),
        )
    with db.read() as session:
        summaries = [s.advertiser_id for s in repo.advertiser_summaries(session)]
        assert repo.advertiser_ids(session) == summaries
        assert summaries == sorted(summaries) and {"settings-only", "fixed-only"} <= set(summaries)
        assert repo.advertiser_ids(session, ["b-2", "Z", "unknown"]) == ["Z", "b-2"]


def test_a_summary_page_searches_the_ids_and_counts_only_its_own(db: Database) -> None:
    a, b = add_image(db).image_key, add_image(db).image_key
    with db.write() as session:
        for n in range(7):
            repo.record_advertiser_images(session, f"Dealer-{n}", {a: None}, NOW)
        repo.record_advertiser_images(session, "Dealer-5", {b: None}, NOW)
        repo.set_advertiser(session, "other", reclassify_on_promote=True, now=NOW)
    with db.read() as session:
        first = repo.summary_page(session, page=1, limit=3)
        assert [s.advertiser_id for s in first.summaries] == ["Dealer-0", "Dealer-1", "Dealer-2"]
        assert (first.total, first.page, first.pages, first.everyone) == (8, 1, 3, 8)
        last = repo.summary_page(session, page=99, limit=3)  # past the end: the last page
        assert (last.page, [s.advertiser_id for s in last.summaries]) == (3, ["Dealer-6", "other"])
        found = repo.summary_page(session, search="dEaLeR-5")
        assert [(s.advertiser_id, s.images) for s in found.summaries] == [("Dealer-5", 2)]
        assert (found.total, found.pages, found.everyone, found.search) == (1, 1, 8, "dEaLeR-5")
        scoped = repo.summary_page(session, ["Dealer-1", "other", "unknown"], search="e")
        assert [s.advertiser_id for s in scoped.summaries] == ["Dealer-1", "other"]
        assert (scoped.total, scoped.everyone) == (2, 2)
        nothing = repo.summary_page(session, search="zz")
        assert (nothing.summaries, nothing.total, nothing.page, nothing.pages) == ([], 0, 1, 1)
