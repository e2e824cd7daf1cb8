"""A photo replaced behind its URL gets its own answer, whatever the server's validators say."""

from __future__ import annotations

import asyncio

from cartag.clock import FakeClock
from cartag.imaging.keys import content_key, content_sha256
from cartag.net.fetch import Fetcher
from cartag.pipeline.classify import ClassifyService
from cartag.pipeline.results import ClassifyResult, ImageRequest
from cartag.settings import Settings
from cartag.store.db import Database
from tests.support.factories import NOW
from tests.support.fakes import FixedClassifier
from tests.support.http_server import DEFAULT_LAST_MODIFIED, ImageServer
from tests.support.images import jpeg_bytes

RED, BLUE = jpeg_bytes(color=(200, 30, 30)), jpeg_bytes(color=(30, 30, 200))


def _classify_each(
    settings: Settings, db: Database, url: str, steps: list[object]
) -> list[ClassifyResult]:
    """Classify ``url`` once per step, calling each step (a change on the server) first."""
    clock = FakeClock(NOW)

    async def go() -> list[ClassifyResult]:
        async with Fetcher(settings) as fetcher:
            service = ClassifyService(settings, db, fetcher, FixedClassifier(), clock)
            try:
                results = []
                for step in steps:
                    step()  # type: ignore[operator]
                    clock.advance(60)
                    [result] = await service.classify("dealer-1", [ImageRequest(url)])
                    results.append(result)
                return results
            finally:
                service.close()

    return asyncio.run(go())


def test_a_content_hash_host_is_not_asked_whether_a_photo_changed(
    settings: Settings, db: Database, server: ImageServer
) -> None:
    # A CDN that sends one ETag for every object (why a host is listed): its 304 to
    # "If-None-Match" says nothing about the photo now behind the URL.
    settings = settings.model_copy(update={"content_hash_hosts": ["127.0.0.1"]})
    url = server.url("/a.jpg")
    first, second, third = _classify_each(
        settings,
        db,
        url,
        [
            lambda: server.add_file("/a.jpg", RED, etag='"same"'),
            lambda: server.add_file("/a.jpg", BLUE, etag='"same"'),
            lambda: None,
        ],
    )
    assert first.image_key == content_key(content_sha256(RED))
    assert (second.status, second.image_key) == ("classified", content_key(content_sha256(BLUE)))
    assert (third.status, third.image_key) == ("cached", second.image_key)


def test_new_bytes_under_old_validators_are_keyed_by_their_content(
    settings: Settings, db: Database, server: ImageServer
) -> None:
    # A server that ignores conditional requests and keeps the ETag, Last-Modified and
    # length of a photo it replaced (the listing's date, a replacement of the same size).
    size = max(len(RED), len(BLUE)) + 16
    red, blue = RED + b"\0" * (size - len(RED)), BLUE + b"\0" * (size - len(BLUE))
    validators = {"ETag": '"same"', "Last-Modified": DEFAULT_LAST_MODIFIED}

    def serve(data: bytes) -> None:
        server.add_file("/b.jpg", data, etag=False, last_modified=False, headers=validators)

    first, second, third = _classify_each(
        settings,
        db,
        server.url("/b.jpg"),
        [lambda: serve(red), lambda: serve(blue), lambda: None],
    )
    assert first.image_key is not None and first.image_key.startswith("v1:")
    assert (second.status, second.image_key) == ("classified", content_key(content_sha256(blue)))
    assert (third.status, third.image_key) == ("cached", second.image_key)
