"""Deploy fixtures: a fake clock and a registry scene (the bundled model as production)."""

from __future__ import annotations

from pathlib import Path

import pytest

from cartag.clock import FakeClock
from cartag.models.classifier import Classifier
from cartag.settings import Settings
from cartag.store.db import Database
from tests.support.registry import Scene, make_scene


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def scene(
    sqlite_db: Database,
    settings: Settings,
    classifier: Classifier,
    clock: FakeClock,
    tmp_path: Path,
) -> Scene:
    """A SQLite registry holding the bundled model as production."""
    return make_scene(sqlite_db, settings, classifier, tmp_path / "sources", clock)
