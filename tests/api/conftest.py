"""Fixtures for API tests: a real image server, the app with the real model, API keys."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
from fastapi.testclient import TestClient

from cartag.api.app import create_app
from cartag.models.classifier import Classifier
from cartag.settings import Settings
from cartag.store import apikeys
from cartag.store.db import Database
from tests.support.db import before_dispose
from tests.support.factories import NOW
from tests.support.http_server import ImageServer


@pytest.fixture
def server() -> Iterator[ImageServer]:
    with ImageServer() as srv:
        yield srv


def make_headers(db: Database, *roles: str) -> dict[str, str]:
    """Authorization headers for a new key with ``roles``."""
    with db.write() as session:
        _, key = apikeys.create_key(session, name="test", roles=list(roles), now=NOW)
    return {"Authorization": f"Bearer {key}"}


AppFactory = Callable[..., TestClient]


@pytest.fixture
def make_client(settings: Settings, classifier: Classifier) -> Iterator[Callable[..., TestClient]]:
    """Build a started TestClient; keyword arguments go to ``create_app``."""
    closers: list[Callable[[], None]] = []

    def build(db: Database, **kwargs: object) -> TestClient:
        kwargs.setdefault("classifier", classifier)
        app = create_app(kwargs.pop("settings", settings), db=db, **kwargs)  # type: ignore[arg-type]
        client = TestClient(app, raise_server_exceptions=False)
        client.__enter__()
        closed = False

        def close() -> None:
            nonlocal closed
            if not closed:
                closed = True
                client.__exit__(None, None, None)

        # The app must stop (job worker, pooled connections) before its database goes.
        before_dispose(db, close)
        closers.append(close)
        return client

    yield build
    for close in closers:
        close()


@pytest.fixture
def client(make_client: AppFactory, db: Database) -> TestClient:
    """The app on a fresh database: each test runs on SQLite and on PostgreSQL."""
    return make_client(db)


@pytest.fixture
def classify_headers(db: Database) -> dict[str, str]:
    return make_headers(db, "classifier")


@pytest.fixture
def fixer_headers(db: Database) -> dict[str, str]:
    return make_headers(db, "fixer")
