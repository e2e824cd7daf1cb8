"""Re-classification after a promotion, for images whose embeddings are not cached."""

from __future__ import annotations

import asyncio

import httpx
from sqlalchemy import select

from cartag.clock import SystemClock
from cartag.imaging.keys import content_key, content_sha256
from cartag.jobs.reclassify import ReclassifyReport, reclassify
from cartag.models.classifier import Classifier
from cartag.net.fetch import Fetcher
from cartag.net.guard import StaticResolver
from cartag.settings import Settings
from cartag.store import advertisers as advertiser_repo
from cartag.store import images as image_repo
from cartag.store.cache import InMemoryLookupCache
from cartag.store.db import Database
from cartag.store.tables import EmbeddingRow
from tests.support.factories import NOW, add_image
from tests.support.fakes import SizeRecorder
from tests.support.images import jpeg_bytes

HOSTS = StaticResolver({"cdn.example": ["93.184.216.34"]})


def _run(
    db: Database, settings: Settings, classifier: Classifier, served: dict[str, bytes]
) -> ReclassifyReport:
    """One re-classification of advertiser A's images, the URLs answered from ``served``."""

    def handler(request: httpx.Request) -> httpx.Response:
        body = served.get(request.url.path)
        if body is None:
            return httpx.Response(404)
        return httpx.Response(200, content=body, headers={"Content-Type": "image/jpeg"})

    async def go() -> ReclassifyReport:
        transport = httpx.MockTransport(handler)
        async with Fetcher(settings, transport=transport, resolver=HOSTS) as fetcher:
            return await reclassify(
                db,
                settings,
                classifier,
                fetcher,
                SystemClock(),
                advertiser_id="A",
                lookup_cache=InMemoryLookupCache(),
            )

    return asyncio.run(go())


def _stored(db: Database, data: bytes, url: str) -> str:
    sha = content_sha256(data)
    image = add_image(
        db, image_key=content_key(sha), url=url, content_sha256=sha, model_version="old-1"
    )
    with db.write() as session:
        advertiser_repo.record_advertiser_images(session, "A", {image.image_key: url}, NOW)
    return image.image_key


def test_a_url_now_serving_other_bytes_keeps_its_answer_and_caches_nothing(
    db: Database, settings: Settings, classifier: Classifier
) -> None:
    same, before = jpeg_bytes(320, 240), jpeg_bytes(300, 200)
    kept = _stored(db, same, "https://cdn.example/same.jpg")
    replaced = _stored(db, before, "https://cdn.example/replaced.jpg")
    gone = _stored(db, jpeg_bytes(), "https://cdn.example/gone.jpg")
    with db.write() as session:
        advertiser_repo.set_advertiser(session, "A", reclassify_on_promote=True, now=NOW)
    # The dealer replaced the photo behind one URL; another URL now answers 404.
    served = {"/same.jpg": same, "/replaced.jpg": jpeg_bytes(color=(250, 250, 250))}

    report = _run(db, settings, classifier, served)

    with db.read() as session:
        rows = image_repo.get_images(session, [kept, replaced, gone])
        cached = set(session.scalars(select(EmbeddingRow.content_sha256)))
    assert rows[kept].model_version == classifier.version
    assert rows[replaced].model_version == "old-1"  # not the new picture's answer
    assert rows[gone].model_version == "old-1"
    # The embedding cache holds the classified bytes' vectors, and nothing under the
    # replaced image's hash (a later classify of those bytes would take it).
    assert cached == {content_sha256(same)}
    assert (report.images, report.downloaded, report.failed) == (3, 1, 2)


def test_downloaded_images_are_decoded_at_the_models_draft_size(
    db: Database, settings: Settings
) -> None:
    photo = jpeg_bytes(1600, 1200)
    _stored(db, photo, "https://cdn.example/big.jpg")
    with db.write() as session:
        advertiser_repo.set_advertiser(session, "A", reclassify_on_promote=True, now=NOW)
    classifier = SizeRecorder(draft=150)

    report = _run(db, settings, classifier, {"/big.jpg": photo})

    assert report.downloaded == 1
    # As a classify decodes it: libjpeg's 1/8 scale, 150 rows (not 1/4, 300 rows).
    assert classifier.sizes == [(200, 150)]
