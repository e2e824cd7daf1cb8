"""Candidate queries: unfixed, model-answered images seen since a cutoff, in their order."""

from __future__ import annotations

import datetime as dt

from cartag.clock import FakeClock
from cartag.pipeline import fixes as fix_service
from cartag.pipeline.fixes import Author
from cartag.store import candidates as repo
from cartag.store.advertisers import record_advertiser_images
from cartag.store.db import Database
from cartag.store.images import UrlEntry, save_urls
from tests.support.candidates import stored_image
from tests.support.factories import NOW

SINCE = NOW - dt.timedelta(days=7)
SEEN = NOW - dt.timedelta(days=1)


def _fix(db: Database, key: str) -> None:
    with db.write() as session:
        fix_service.apply_fix(
            session,
            image_key=key,
            advertiser_id="other",
            author=Author("alice"),
            scope="global",
            image_type="Stock",
            color=None,
            comment=None,
            clock=FakeClock(NOW),
        )


def test_an_advertisers_unfixed_images_lowest_confidence_first(db: Database) -> None:
    sure = stored_image(db, advertiser="d1", seen_at=SEEN, confidence=0.95)
    unsure = stored_image(db, advertiser="d1", seen_at=SEEN, confidence=0.41)
    middle = stored_image(db, advertiser="d1", seen_at=SEEN, confidence=0.7)
    unknown = stored_image(db, advertiser="d1", seen_at=SEEN, confidence=None)
    # Left out: fixed, seen before the window, another advertiser's, never answered.
    _fix(db, stored_image(db, advertiser="d1", seen_at=SEEN, confidence=0.1))
    stored_image(db, advertiser="d1", seen_at=SINCE - dt.timedelta(seconds=1), confidence=0.1)
    stored_image(db, advertiser="d2", seen_at=SEEN, confidence=0.1)
    stored_image(db, advertiser="d1", seen_at=SEEN, confidence=0.1, image_type=None)

    with db.read() as session:
        found = repo.unfixed_images_of(session, "d1", SINCE, limit=10)
        page = repo.unfixed_images_of(session, "d1", SINCE, limit=2, offset=2)
    assert [i.image_key for i in found] == [unsure, middle, sure, unknown]
    assert [i.image_key for i in page] == [sure, unknown]
    first = found[0]
    assert (first.advertiser_id, first.seen_at, first.image_type, first.color) == (
        "d1",
        SEEN,
        "Dealer",
        "Red",
    )
    assert first.urls and first.urls[0].startswith("https://cdn.example/")


def test_far_images_above_the_threshold_farthest_first(db: Database) -> None:
    far = stored_image(db, advertiser="d1", seen_at=SEEN, novelty=0.52)
    farther = stored_image(db, advertiser="d2", seen_at=SEEN, novelty=0.8)
    stored_image(db, advertiser="d1", seen_at=SEEN, novelty=0.3)  # at/below: near
    stored_image(db, advertiser="d1", seen_at=SEEN, novelty=None)  # unknown
    stored_image(db, advertiser="d1", seen_at=SINCE - dt.timedelta(days=1), novelty=0.9)
    _fix(db, stored_image(db, advertiser="d1", seen_at=SEEN, novelty=0.95))
    # Seen by two advertisers: the latest sighting names it.
    with db.write() as session:
        record_advertiser_images(session, "d3", dict.fromkeys([far]), SEEN + dt.timedelta(hours=1))
        entry = UrlEntry("https://mirror.example/far.jpg", far, None, None, None)
        save_urls(session, [entry], NOW)

    with db.read() as session:
        found = repo.far_images(session, SINCE, 0.3, limit=10)
    assert [i.image_key for i in found] == [farther, far]
    assert [i.novelty for i in found] == [0.8, 0.52]
    assert found[1].advertiser_id == "d3" and found[1].seen_at == SEEN + dt.timedelta(hours=1)
    assert found[1].urls[-1] == "https://mirror.example/far.jpg"
