"""The read-through lookup cache: in memory and on the real Redis, alone and under classify."""

from __future__ import annotations

import asyncio
import json
import os
import uuid
from collections.abc import Iterator
from dataclasses import replace

import pytest

from cartag.clock import FakeClock
from cartag.models.classifier import Classifier
from cartag.net.fetch import Fetcher
from cartag.pipeline import fixes as fix_service
from cartag.pipeline.classify import ClassifyService
from cartag.pipeline.fixes import Author
from cartag.pipeline.results import ClassifyResult, ImageRequest
from cartag.settings import Settings
from cartag.store.cache import (
    InMemoryLookupCache,
    LookupCache,
    RedisLookupCache,
    UrlLookup,
    build_lookup_cache,
)
from cartag.store.db import Database
from tests.support.factories import NOW
from tests.support.http_server import ImageServer
from tests.support.images import jpeg_bytes

REDIS_URL = os.environ.get("CARTAG_TEST_REDIS_URL", "redis://127.0.0.1:6379/13")


def _entry(url: str = "https://cdn.test/a.jpg", key: str = "v1:a", **changes: object) -> UrlLookup:
    fields: dict[str, object] = {
        "url": url,
        "image_key": key,
        "etag": '"e1"',
        "last_modified": None,
        "content_length": 123,
        "checked_at": 1_700_000_000.5,
        "image_url": url,
        "content_sha256": "ab" * 32,
        "phash": "0123456789abcdef",
        "image_type": "Dealer",
        "color": "Red",
        "confidence": 0.93,
        "model_version": "m1",
        "color_reason": None,
        "novelty": 0.125,
    }
    fields.update(changes)
    return UrlLookup(**fields)  # type: ignore[arg-type]


class _Ticks:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def _exercise(cache: LookupCache) -> None:
    """The behaviour both implementations share."""
    a, b = _entry(), _entry("https://cdn.test/b.jpg", "v1:b", color=None, color_reason="x")
    # Another URL of image v1:a (an image's own fields are the same whichever URL).
    shared = _entry("https://cdn.test/a2.jpg", "v1:a", image_url=a.url)
    assert cache.get_many([a.url]) == {}
    cache.set_many([a, b, shared])
    assert cache.get_many([a.url, b.url, "https://cdn.test/none.jpg"]) == {a.url: a, b.url: b}
    # A revalidation stores the entry again with its new time.
    cache.touch([b], 1_800_000_000.0)
    assert cache.get_many([b.url]) == {b.url: replace(b, checked_at=1_800_000_000.0)}
    cache.invalidate(urls=[b.url])
    assert set(cache.get_many([a.url, b.url])) == {a.url}
    # A re-classified image is forgotten for every URL that serves it.
    cache.invalidate(image_keys=["v1:a"])
    assert cache.get_many([a.url, shared.url]) == {}
    # A revalidation read before another request invalidated or replaced the entry
    # does not put the old answer back (it was served unrevalidated until it expired).
    cache.touch([a, b], 1_800_000_001.0)
    assert cache.get_many([a.url, b.url]) == {}
    moved = replace(b, image_key="v1:new", color="Blue", checked_at=1_800_000_002.0)
    cache.set_many([moved])
    cache.touch([b], 1_800_000_003.0)
    assert cache.get_many([b.url]) == {b.url: moved}
    # Nor an image's old answer, whose entry another URL still holds.
    cache.set_many([shared])
    cache.invalidate(image_keys=["v1:a"])
    cache.set_many([replace(a, color="Green")])
    cache.touch([shared], 1_800_000_004.0)
    assert cache.get_many([a.url, shared.url]) == {
        a.url: replace(a, color="Green"),
        shared.url: replace(shared, color="Green", checked_at=1_800_000_004.0),
    }


def test_in_memory_cache_round_trips_invalidates_and_expires() -> None:
    ticks = _Ticks()
    cache = InMemoryLookupCache(ttl_s=10, now=ticks)
    _exercise(cache)
    entry = _entry()
    cache.set_many([entry])
    ticks.now = 9.9
    assert cache.get_many([entry.url]) == {entry.url: entry}
    ticks.now = 10.0
    assert cache.get_many([entry.url]) == {}


def test_an_entry_written_before_novelty_existed_still_joins() -> None:
    entry = _entry()
    old_image_part = json.dumps(json.loads(entry.image_part())[:-1])  # without the novelty
    joined = UrlLookup.join(entry.url, entry.url_part(), old_image_part)
    assert joined == replace(entry, novelty=None)


def test_no_cache_configured_caches_nothing(settings: Settings) -> None:
    cache = build_lookup_cache(settings)
    cache.set_many([_entry()])
    cache.touch([_entry()], 1_800_000_000.0)
    assert type(cache) is LookupCache and cache.get_many([_entry().url]) == {}


@pytest.fixture
def redis_cache() -> Iterator[RedisLookupCache]:
    import redis

    try:
        redis.Redis.from_url(REDIS_URL, socket_connect_timeout=2).ping()
    except Exception as exc:  # noqa: BLE001 - any failure means "not here"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"CI=true but Redis is not reachable at {REDIS_URL}: {exc}")
        pytest.skip(f"Redis not reachable at {REDIS_URL}")
    prefix = f"cartag-test-{uuid.uuid4().hex[:8]}:"
    cache = RedisLookupCache(REDIS_URL, ttl_s=60, prefix=prefix)
    yield cache
    client = redis.Redis.from_url(REDIS_URL)
    for name in client.scan_iter(f"{prefix}*"):
        client.delete(name)
    client.close()
    cache.close()


@pytest.mark.services
def test_redis_cache_round_trips_invalidates_and_sets_a_ttl(redis_cache: RedisLookupCache) -> None:
    import redis

    _exercise(redis_cache)
    entry = _entry()
    redis_cache.set_many([entry])
    client = redis.Redis.from_url(REDIS_URL)
    ttls = [client.ttl(name) for name in client.scan_iter(f"{redis_cache._url_prefix}*")]
    client.close()
    assert ttls and all(0 < ttl <= 60 for ttl in ttls)


def test_an_unreachable_redis_is_skipped_not_fatal() -> None:
    cache = RedisLookupCache("redis://127.0.0.1:1/0", ttl_s=60)
    cache.set_many([_entry()])
    assert cache.get_many([_entry().url]) == {}
    cache.invalidate(urls=[_entry().url])
    cache.close()


# --- under classify ------------------------------------------------------------------


@pytest.fixture
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    loop = asyncio.new_event_loop()
    yield loop
    loop.close()


@pytest.fixture
def server() -> Iterator[ImageServer]:
    with ImageServer() as srv:
        yield srv


def _service(
    settings: Settings, db: Database, classifier: Classifier, cache: LookupCache, **changes: object
) -> ClassifyService:
    return ClassifyService(
        settings.model_copy(update=changes),
        db,
        Fetcher(settings),
        classifier,
        FakeClock(NOW),
        lookup_cache=cache,
    )


def _classify(
    loop: asyncio.AbstractEventLoop, service: ClassifyService, urls: list[str]
) -> list[ClassifyResult]:
    return loop.run_until_complete(service.classify("dealer-1", [ImageRequest(u) for u in urls]))


@pytest.mark.slow
def test_classify_reads_through_the_cache_and_a_fix_shows_at_once(
    settings: Settings,
    db: Database,
    classifier: Classifier,
    server: ImageServer,
    loop: asyncio.AbstractEventLoop,
) -> None:
    cache = InMemoryLookupCache()
    service = _service(settings, db, classifier, cache, revalidate_after_s=3600)
    try:
        for i in range(3):
            server.add_file(f"/{i}.jpg", jpeg_bytes(color=(200, 40 * i, 30)))
        urls = [server.url(f"/{i}.jpg") for i in range(3)]
        first = _classify(loop, service, urls)
        assert [r.status for r in first] == ["classified"] * 3
        assert cache.get_many(urls) == {}  # new images are not cached until read
        assert [r.status for r in _classify(loop, service, urls)] == ["cached"] * 3  # read
        server.reset_counters()
        cache.hits = cache.misses = 0
        second = _classify(loop, service, urls)
        assert [r.status for r in second] == ["cached"] * 3
        # Answered from the cache: no database lookup, no request to the image server.
        assert (cache.hits, cache.misses) == (3, 0) and server.requests() == []
        assert [(r.image_type, r.color) for r in second] == [(r.image_type, r.color) for r in first]

        # A fix is read from the database on every classify: visible at once.
        key = first[0].image_key
        assert key is not None
        with db.write() as session:
            fix_service.apply_fix(
                session,
                image_key=key,
                advertiser_id="dealer-1",
                author=Author("alice"),
                scope="advertiser",
                image_type="Stock",
                color="Purple",
                comment=None,
                clock=FakeClock(NOW),
            )
        fixed = _classify(loop, service, urls)[0]
        assert (fixed.image_type, fixed.color, fixed.source) == ("Stock", "Purple", "override")
    finally:
        service.close()
        loop.run_until_complete(service.fetcher.aclose())


@pytest.mark.slow
def test_a_changed_image_is_not_answered_from_a_stale_entry(
    settings: Settings,
    db: Database,
    classifier: Classifier,
    server: ImageServer,
    loop: asyncio.AbstractEventLoop,
) -> None:
    cache = InMemoryLookupCache()
    service = _service(settings, db, classifier, cache)  # revalidate every time
    try:
        server.add_file("/car.jpg", jpeg_bytes(color=(200, 30, 30)))
        url = server.url("/car.jpg")
        (old,) = _classify(loop, service, [url])
        (cached,) = _classify(loop, service, [url])
        assert cached.status == "cached" and cached.image_key == old.image_key
        assert cache.get_many([url])[url].image_key == old.image_key
        # The advertiser uploads another photo under the same URL.
        server.add_file("/car.jpg", jpeg_bytes(width=80, height=60, color=(20, 30, 200)))
        (new,) = _classify(loop, service, [url])
        assert new.status == "classified" and new.image_key != old.image_key
        (again,) = _classify(loop, service, [url])
        assert again.status == "cached" and again.image_key == new.image_key
        assert cache.get_many([url])[url].image_key == new.image_key
    finally:
        service.close()
        loop.run_until_complete(service.fetcher.aclose())


@pytest.mark.slow
@pytest.mark.services
def test_two_services_share_the_redis_cache(
    settings: Settings,
    db: Database,
    classifier: Classifier,
    server: ImageServer,
    loop: asyncio.AbstractEventLoop,
    redis_cache: RedisLookupCache,
) -> None:
    """Two API processes on one Redis: what one learnt, the other answers from the cache."""
    one = _service(settings, db, classifier, redis_cache, revalidate_after_s=3600)
    two = _service(settings, db, classifier, redis_cache, revalidate_after_s=3600)
    try:
        server.add_file("/car.jpg", jpeg_bytes(color=(20, 200, 30)))
        url = server.url("/car.jpg")
        (first,) = _classify(loop, one, [url])
        assert first.status == "classified"
        _classify(loop, one, [url])  # reads it back: now in Redis
        assert redis_cache.get_many([url])[url].image_key == first.image_key
        server.reset_counters()
        (second,) = _classify(loop, two, [url])
        assert second.status == "cached" and second.image_key == first.image_key
        assert server.requests() == []
    finally:
        for service in (one, two):
            service.close()
            loop.run_until_complete(service.fetcher.aclose())


@pytest.mark.slow
def test_a_recently_revalidated_url_is_not_asked_again_until_the_window_ends(
    settings: Settings,
    sqlite_db: Database,
    classifier: Classifier,
    server: ImageServer,
    loop: asyncio.AbstractEventLoop,
) -> None:
    service = _service(settings, sqlite_db, classifier, LookupCache(), revalidate_after_s=60)
    clock = service.clock
    assert isinstance(clock, FakeClock)
    try:
        server.add_file("/car.jpg", jpeg_bytes(color=(200, 200, 30)))
        url = server.url("/car.jpg")
        assert _classify(loop, service, [url])[0].status == "classified"
        server.reset_counters()
        clock.advance(59)
        assert _classify(loop, service, [url])[0].status == "cached"
        assert server.requests() == []  # inside the window: no conditional request
        clock.advance(2)
        assert _classify(loop, service, [url])[0].status == "cached"
        (revalidation,) = server.requests()
        assert "if-none-match" in revalidation.headers  # answered 304
        clock.advance(59)  # the 304 restarted the window
        assert _classify(loop, service, [url])[0].status == "cached"
        assert len(server.requests()) == 1
    finally:
        service.close()
        loop.run_until_complete(service.fetcher.aclose())
