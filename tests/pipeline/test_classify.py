"""Re-running an unchanged inventory: conditional requests only, on kept connections."""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Sequence
from typing import Any

from sqlalchemy import event

from cartag.clock import FakeClock
from cartag.net.fetch import Fetcher
from cartag.net.outcomes import FetchOutcome, FetchRequest
from cartag.pipeline.classify import ClassifyService, ClassifyStats
from cartag.pipeline.results import ClassifyResult, ImageRequest
from cartag.settings import Settings
from cartag.store import images as image_repo
from cartag.store.cache import InMemoryLookupCache
from cartag.store.db import Database
from tests.support.factories import NOW
from tests.support.fakes import FixedClassifier
from tests.support.http_server import ImageServer
from tests.support.images import jpeg_bytes


def test_a_rerun_of_an_unchanged_inventory_sends_no_image_bytes_on_kept_connections(
    settings: Settings, db: Database, server: ImageServer
) -> None:
    urls = []
    for i in range(40):
        server.add_file(f"/{i}.jpg", jpeg_bytes(16, 12, (6 * i, 90, 30)))
        urls.append(server.url(f"/{i}.jpg"))
    settings = settings.model_copy(update={"revalidate_per_host_concurrency": 4})
    clock = FakeClock(NOW)
    touches: list[str] = []

    def count(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        if statement.lstrip().upper().startswith("UPDATE URLS"):
            touches.append(statement)

    event.listen(db.engine, "before_cursor_execute", count)

    async def runs() -> list[tuple[list[ClassifyResult], ClassifyStats, int, int]]:
        async with Fetcher(settings) as fetcher:
            service = ClassifyService(settings, db, fetcher, FixedClassifier(), clock)
            try:
                done = []
                for _ in range(3):
                    server.reset_counters()
                    touches.clear()
                    clock.advance(60)
                    stats = ClassifyStats()
                    requests = [ImageRequest(u) for u in urls]
                    results = await service.classify("dealer-1", requests, stats)
                    done.append((results, stats, server.bytes_sent, len(touches)))
                    opened.append(server.connections)
                return done
            finally:
                service.close()

    opened: list[int] = []
    (first, _, sent, _), *reruns = asyncio.run(runs())
    assert {r.status for r in first} == {"classified"} and sent > 0
    for results, stats, sent, updates in reruns:
        assert [r.status for r in results] == ["cached"] * 40
        assert [r.image_key for r in results] == [r.image_key for r in first]
        assert (stats.not_modified, stats.fetched, sent) == (40, 0, 0)
        assert updates == 1  # the 304s are recorded in one statement, not one per chunk
    # Downloads and conditional requests share the lean keep-alive connections: the
    # re-runs send their conditional requests on those the first run opened.
    assert opened[0] >= 1 and opened[1] == opened[2] == 0
    with db.read() as session:
        checked = image_repo.get_urls(session, urls)
    assert {row.checked_at for row in checked.values()} == {NOW + dt.timedelta(seconds=180)}


def test_the_first_chunk_is_one_batch_per_runner(settings: Settings, db: Database) -> None:
    settings = settings.model_copy(update={"inference_batch_size": 4, "inference_workers": 2})

    async def chunk_sizes() -> list[list[int]]:
        async with Fetcher(settings) as fetcher:
            service = ClassifyService(settings, db, fetcher, FixedClassifier(), FakeClock(NOW))
            try:
                urls = [f"http://a.test/{i}.jpg" for i in range(100)]
                chunks = service._chunks(urls)
                assert [url for chunk in chunks for url in chunk] == urls  # all, in order
                return [[len(chunk) for chunk in chunks], [len(c) for c in service._chunks([])]]
            finally:
                service.close()

    # The model starts on the first 8 as soon as they are decoded; then 4 batches a runner.
    assert asyncio.run(chunk_sizes()) == [[8, 32, 32, 28], []]


class _HeldFetcher(Fetcher):
    """A fetcher whose next call, once ``hold`` is set, waits for it after downloading."""

    def __init__(self, settings: Settings) -> None:
        super().__init__(settings)
        self.hold: asyncio.Event | None = None
        self.held = asyncio.Event()

    async def fetch_many(self, requests: Sequence[FetchRequest]) -> list[FetchOutcome]:
        outcomes = await super().fetch_many(requests)
        if self.hold is not None:
            hold, self.hold = self.hold, None
            self.held.set()
            await hold.wait()
        return outcomes


def test_a_revalidation_does_not_restore_a_lookup_another_request_replaced(
    settings: Settings, db: Database, server: ImageServer
) -> None:
    # A re-run got its 304 while an overlapping request stored the URL's new image and
    # cleared its cached lookup; the re-run then wrote back the lookup it had read
    # before, and with revalidate_after_s the old answer was served, unrevalidated,
    # until the entry expired.
    settings = settings.model_copy(update={"revalidate_after_s": 600})
    server.add_file("/car.jpg", jpeg_bytes(16, 12, (200, 30, 30)))
    url = server.url("/car.jpg")
    clock = FakeClock(NOW)
    cache = InMemoryLookupCache()

    async def runs() -> list[ClassifyResult]:
        async with _HeldFetcher(settings) as fetcher:
            service = ClassifyService(
                settings, db, fetcher, FixedClassifier(), clock, lookup_cache=cache
            )
            try:
                (first,) = await service.classify("dealer-1", [ImageRequest(url)])
                clock.advance(3600)  # due for revalidation
                hold = fetcher.hold = asyncio.Event()
                rerun = asyncio.create_task(service.classify("dealer-1", [ImageRequest(url)]))
                await fetcher.held.wait()  # the re-run has its 304, read before the change
                server.add_file("/car.jpg", jpeg_bytes(16, 12, (30, 30, 200)))
                (changed,) = await service.classify("dealer-2", [ImageRequest(url)])
                hold.set()
                (revalidated,) = await rerun
                (after,) = await service.classify("dealer-1", [ImageRequest(url)])
                return [first, revalidated, changed, after]
            finally:
                service.close()

    first, revalidated, changed, after = asyncio.run(runs())
    assert (first.status, revalidated.status, changed.status) == (
        "classified",
        "cached",
        "classified",
    )
    assert revalidated.image_key == first.image_key != changed.image_key
    # Within revalidate_after_s the URL is answered from its lookup alone: the new one.
    assert (after.status, after.image_key) == ("cached", changed.image_key)
