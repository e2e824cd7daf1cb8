"""Fresh databases for tests: a SQLite file, or a private database on the real PostgreSQL.

Each is a copy of one migrated per test process (a file copied; PostgreSQL's ``CREATE
DATABASE ... TEMPLATE``), not migrated anew: running every Alembic migration for each test
cost about 0.2 s on SQLite and 1 s on PostgreSQL, minutes of the suite.
"""

from __future__ import annotations

import atexit
import os
import re
import shutil
import tempfile
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from sqlalchemy import create_engine, make_url, text
from sqlalchemy.engine import Engine

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
# Databases this module makes on the server: cartag_test_<pid>_<hex> (the template is
# cartag_test_<pid>_template). The pid lets a later run drop those of a killed one.
_PREFIX = "cartag_test_"
_OURS = re.compile(rf"^{_PREFIX}(?P<pid>[0-9]+)_[a-z0-9]+$")
# Per process: the migrated SQLite file and PostgreSQL database that tests copy.
_templates: dict[str, str] = {}


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


def _sqlite_template() -> Path:
    if "sqlite" not in _templates:
        folder = Path(tempfile.mkdtemp(prefix="cartag-test-db-"))
        atexit.register(shutil.rmtree, folder, True)
        path = folder / "template.db"
        db = Database(f"sqlite:///{path}")
        upgrade(db)
        db.dispose()
        _templates["sqlite"] = str(path)
    return Path(_templates["sqlite"])


def _admin() -> Engine:
    # CREATE / DROP DATABASE cannot run inside a transaction.
    return create_engine(PG_URL, isolation_level="AUTOCOMMIT")


def _database_url(name: str) -> str:
    return make_url(PG_URL).set(database=name).render_as_string(hide_password=False)


def _drop(admin: Engine, name: str) -> None:
    with admin.connect() as conn:
        # FORCE: a server a test started may still hold a connection.
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


def _drop_left_over(admin: Engine) -> None:
    """Drop the test databases of test processes that are gone (killed runs)."""
    with admin.connect() as conn:
        names = conn.execute(
            text("SELECT datname FROM pg_database WHERE datname LIKE :p"), {"p": f"{_PREFIX}%"}
        ).scalars()
        gone = [
            n for n in names if (m := _OURS.match(n)) and not Path(f"/proc/{m['pid']}").exists()
        ]
    for name in gone:
        _drop(admin, name)


def _postgres_template() -> str:
    if "postgresql" not in _templates:
        admin = _admin()
        _drop_left_over(admin)
        name = f"{_PREFIX}{os.getpid()}_template"
        _drop(admin, name)
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
        db = Database(_database_url(name))
        upgrade(db)
        db.dispose()  # a template must have no connections while it is copied
        atexit.register(lambda: _drop(_admin(), name))
        admin.dispose()
        _templates["postgresql"] = name
    return _templates["postgresql"]


@contextmanager
def fresh_database(kind: str, tmp_path: Path) -> Iterator[Database]:
    """A migrated, empty database that is dropped afterwards."""
    if kind == "sqlite":
        path = tmp_path / "cartag.db"
        shutil.copyfile(_sqlite_template(), path)
        db = Database(f"sqlite:///{path}")
        try:
            yield db
        finally:
            _run_before_dispose(db)
            db.dispose()
        return
    require_postgres()
    template = _postgres_template()
    name = f"{_PREFIX}{os.getpid()}_{uuid.uuid4().hex[:12]}"
    admin = _admin()
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}" TEMPLATE "{template}"'))
    db = Database(_database_url(name))
    try:
        yield db
    finally:
        _run_before_dispose(db)
        db.dispose()
        _drop(admin, name)
        admin.dispose()
