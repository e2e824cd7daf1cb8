"""Shared fixtures. Factories live in tests/support as plain functions."""

from __future__ import annotations

import ipaddress
import logging
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from cartag.models.classifier import Classifier, load_classifier
from cartag.settings import Settings
from cartag.store.db import Database
from tests.support.db import fresh_database

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "vcr-train"


@pytest.fixture(scope="session", autouse=True)
def model_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """One model cache for the session (CARTAG_CACHE_DIR, seen by in-process settings, the
    CLI and subprocesses): the backbone is exported and quantized once, not per data dir."""
    folder = tmp_path_factory.mktemp("model-cache")
    before = os.environ.get("CARTAG_CACHE_DIR")
    os.environ["CARTAG_CACHE_DIR"] = str(folder)
    yield folder
    if before is None:
        os.environ.pop("CARTAG_CACHE_DIR", None)
    else:
        os.environ["CARTAG_CACHE_DIR"] = before


@pytest.fixture(autouse=True)
def root_logging() -> Iterator[None]:
    """Each test leaves the root logger as it found it.

    A command run in-process (``cartag worker``, ``serve``) configures logging for the
    whole process; without this, its handler wrote into the output of the tests after it.
    """
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    for handler in list(root.handlers):
        if handler not in handlers:
            root.removeHandler(handler)
    for handler in handlers:
        if handler not in root.handlers:
            root.addHandler(handler)
    root.setLevel(level)


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The folder of real, color-labelled car photos (../shared/data/vcr-train)."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real images not found at {SHARED_DATA}")
    return SHARED_DATA


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    """Settings for a test: private data dir, loopback allowed (the local image server),
    the fp32 backbone like the session's ``classifier`` (the int8 default has its own tests)."""
    return Settings(
        data_dir=tmp_path / "data",
        precision="fp32",
        allowed_networks=[ipaddress.ip_network("127.0.0.0/8")],
        retries=1,
        retry_backoff_s=0.01,
        connect_timeout_s=2,
        read_timeout_s=2,
    )


@pytest.fixture(
    params=["sqlite", pytest.param("postgresql", marks=pytest.mark.services)],
)
def db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Database]:
    """A fresh, migrated database per test, on SQLite and on the real PostgreSQL."""
    with fresh_database(request.param, tmp_path) as database:
        yield database


@pytest.fixture
def sqlite_db(tmp_path: Path) -> Iterator[Database]:
    """A fresh SQLite database, for tests whose subject is not the backend."""
    with fresh_database("sqlite", tmp_path) as database:
        yield database


@pytest.fixture(scope="session")
def classifier() -> Classifier:
    """The bundled model with the fp32 backbone, loaded once per test session (the int8
    one, the service's default: tests/models/test_quantization.py)."""
    return load_classifier(Settings(precision="fp32"))
