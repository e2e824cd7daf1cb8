"""Sorting downloads into known and new images (pipeline/outcomes.py)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import event

from cartag.clock import FakeClock
from cartag.imaging.keys import content_key, content_sha256
from cartag.net.outcomes import Fetched, Validators
from cartag.pipeline.outcomes import New, match_known
from cartag.store.cache import LookupCache
from cartag.store.db import Database
from cartag.telemetry import Telemetry
from tests.support.factories import NOW, add_image


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
