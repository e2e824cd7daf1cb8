"""Fresh databases for tests: a SQLite file, or a private schema on the real PostgreSQL."""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from cartag.store.db import Database, upgrade

# Callbacks run before a test database is disposed (e.g. stopping an app that uses
# it), whatever order pytest tears fixtures down in.
_BEFORE_DISPOSE: dict[int, list[Callable[[], None]]] = {}


def before_dispose(db: Database, callback: Callable[[], None]) -> None:
    """Run ``callback`` when ``db``'s fixture ends, before its connections are closed."""
    _BEFORE_DISPOSE.setdefault(id(db), []).append(callback)


def _run_before_dispose(db: Database) -> None:
    for callback in reversed(_BEFORE_DISPOSE.pop(id(db), [])):
        callback()


PG_URL = os.environ.get(
    "CARTAG_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)


def postgres_available() -> bool:
    try:
        engine = create_engine(PG_URL, connect_args={"connect_timeout": 2})
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
        engine.dispose()
        return True
    except Exception:  # noqa: BLE001 - any failure means "not here"
        return False


def require_postgres() -> None:
    """Skip without PostgreSQL on a laptop; in CI (CI=true) its absence is a failure."""
    if postgres_available():
        return
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"CI=true but PostgreSQL is not reachable at {PG_URL}")
    pytest.skip(f"PostgreSQL not reachable at {PG_URL}")


@contextmanager
def fresh_database(kind: str, tmp_path: Path) -> Iterator[Database]:
    """A migrated, empty database that is dropped afterwards."""
    if kind == "sqlite":
        db = Database(f"sqlite:///{tmp_path / 'cartag.db'}")
        upgrade(db)
        try:
            yield db
        finally:
            _run_before_dispose(db)
            db.dispose()
        return
    require_postgres()
    schema = f"t_{uuid.uuid4().hex[:16]}"
    admin = create_engine(PG_URL)
    with admin.begin() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    db = Database(PG_URL, connect_args={"options": f"-csearch_path={schema}"})
    try:
        upgrade(db)
        yield db
    finally:
        _run_before_dispose(db)
        db.dispose()
        with admin.begin() as conn:
            conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()
