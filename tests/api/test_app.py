"""The app factory's process-level options."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from cartag.store.db import Database
from tests.api.conftest import AppFactory


@pytest.fixture
def unfrozen() -> Iterator[None]:
    gc.unfreeze()
    yield
    gc.unfreeze()  # the test process collects as usual afterwards


@pytest.mark.usefixtures("unfrozen")
def test_a_served_app_freezes_what_its_startup_built(
    make_client: AppFactory, sqlite_db: Database
) -> None:
    make_client(sqlite_db)
    assert gc.get_freeze_count() == 0  # tests build many apps: not by default
    make_client(sqlite_db, freeze_gc=True)  # as cartag serve does
    assert gc.get_freeze_count() > 10_000
