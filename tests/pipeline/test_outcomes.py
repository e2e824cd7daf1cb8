"""Sorting downloads into known and new images (pipeline/outcomes.py)."""

from __future__ import annotations

from collections.abc import Collection, Iterator
from typing import Any

import numpy as np
import pytest
from sqlalchemy import event

from cartag.clock import FakeClock
from cartag.imaging.keys import content_key, content_sha256
from cartag.models.classifier import make_prediction
from cartag.models.color_providers import ColorAnswer
from cartag.net.outcomes import Fetched, Validators
from cartag.pipeline.outcomes import New, lookup_urls, match_known, store_new
from cartag.store import images as image_repo
from cartag.store.cache import InMemoryLookupCache, LookupCache
from cartag.store.db import Database
from cartag.telemetry import Telemetry
from tests.support.factories import NOW, add_image
from tests.support.fakes import FixedClassifier


@pytest.fixture
def writes(sqlite_db: Database) -> Iterator[list[str]]:
    """The write transactions begun on ``sqlite_db`` (BEGIN IMMEDIATE)."""
    begun: list[str] = []

    def count(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        if statement.upper().startswith("BEGIN IMMEDIATE"):
            begun.append(statement)

    event.listen(sqlite_db.engine, "before_cursor_execute", count)
    yield begun
    event.remove(sqlite_db.engine, "before_cursor_execute", count)


def _new(data: bytes, url: str) -> New:
    sha = content_sha256(data)
    validators = Validators(etag=None, last_modified=None, content_length=len(data))
    return New(Fetched(url, url, data, validators, content_type=None), content_key(sha), sha)


def test_new_downloads_take_no_write_transaction(sqlite_db: Database, writes: list[str]) -> None:
    new = [_new(bytes([i]) * 100, f"http://a.test/{i}.jpg") for i in range(5)]
    found = match_known(sqlite_db, LookupCache(), Telemetry(), new, [], FakeClock(NOW))
    # This runs on the event loop: a write there would wait for the store's lock while
    # another chunk's answers are saved.
    assert found == {} and writes == []


def test_a_download_of_cached_bytes_reuses_the_answer(db: Database) -> None:
    image = add_image(db)
    item = _new(b"x" * 100, "http://a.test/moved.jpg")
    item.sha256 = image.content_sha256 or ""
    found = match_known(db, LookupCache(), Telemetry(), [item], [], FakeClock(NOW))
    assert found[item.key].image_type == image.image_type


class _LookupDuringInvalidation(InMemoryLookupCache):
    """A cache that another request reads through at the moment it is invalidated."""

    def __init__(self, db: Database) -> None:
        super().__init__()
        self.db = db

    def invalidate(self, urls: Collection[str] = (), image_keys: Collection[str] = ()) -> None:
        super().invalidate(urls, image_keys)
        lookup_urls(self.db, self, list(urls))  # another request's classify, right now


def test_a_new_image_of_a_known_url_leaves_no_stale_lookup_cached(db: Database) -> None:
    # The URL served image A; it now serves other bytes, stored as a new image. The
    # cache used to be invalidated before the commit, and a request reading the URL in
    # between cached image A's answer again (served until the entry expired).
    old = add_image(db, image_type="Stock")
    url = old.url
    with db.write() as session:
        image_repo.save_urls(session, [image_repo.UrlEntry(url, old.image_key, None, None, 1)], NOW)
    cache = _LookupDuringInvalidation(db)
    item = _new(b"other bytes" * 10, url)
    prediction = make_prediction(np.array([0.9, 0.05, 0.05]), np.eye(12)[0])
    store_new(db, cache, FixedClassifier(), [item], [prediction], [ColorAnswer("Black")], NOW)
    assert cache.get_many([url])[url].image_key == item.key
