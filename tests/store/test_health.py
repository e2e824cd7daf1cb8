"""Storage failures named (not 500s), the write probe, the data-dir check."""

from __future__ import annotations

import errno
import os
import threading
from pathlib import Path

import pytest
from sqlalchemy.exc import IntegrityError, OperationalError, ProgrammingError

from cartag.clock import FakeClock
from cartag.errors import StorageError
from cartag.settings import Settings
from cartag.store import health as health_module
from cartag.store.db import Database
from cartag.store.health import (
    FULL,
    READ_ONLY,
    UNREACHABLE,
    StorageHealth,
    check_data_dir,
    check_store,
    describe_os_error,
    probe_database,
    storage_problem,
)
from tests.support.storage import full_disk


def _db_error(message: str, sqlstate: str | None = None, cls: type = OperationalError) -> object:
    orig = Exception(message)
    if sqlstate is not None:
        orig.sqlstate = sqlstate  # type: ignore[attr-defined]
    return cls("UPDATE t SET x = 1", {}, orig)


def test_storage_failures_are_told_from_bugs() -> None:
    assert storage_problem(_db_error("database or disk is full")) == FULL
    assert storage_problem(_db_error("attempt to write a readonly database")) == READ_ONLY
    assert storage_problem(_db_error("unable to open database file")) == UNREACHABLE
    # PostgreSQL, by SQLSTATE: disk full, read-only transaction (a standby), connection.
    assert storage_problem(_db_error("could not extend file", "53100")) == FULL
    ro = _db_error("cannot execute UPDATE in a read-only transaction", "25006", ProgrammingError)
    assert storage_problem(ro) == READ_ONLY
    assert storage_problem(_db_error("connection refused", "08006")) == UNREACHABLE
    # Not storage: a constraint, a bug.
    assert storage_problem(_db_error("UNIQUE constraint failed", cls=IntegrityError)) is None
    assert storage_problem(ValueError("bug")) is None


def test_the_probe_commits_so_a_full_disk_fails_it(sqlite_db: Database) -> None:
    probe_database(sqlite_db)
    with full_disk(sqlite_db), pytest.raises(OperationalError) as exc:
        probe_database(sqlite_db)
    assert storage_problem(exc.value) == FULL


def test_storage_health_probes_remembers_failures_and_recovers(
    sqlite_db: Database, tmp_path: Path
) -> None:
    clock = FakeClock()
    health = StorageHealth(sqlite_db, tmp_path / "data", clock, max_age_s=2)
    assert health.check().ok
    with full_disk(sqlite_db):
        assert health.check().ok  # younger than max_age_s: not probed again
        clock.advance(2)
        state = health.check()
        assert not state.ok and state.problem == FULL
    health.failed("seen by a request")
    assert health.check().problem == "seen by a request"
    clock.advance(2)
    assert health.check().ok


def test_close_waits_for_the_background_probe_and_starts_no_more(
    sqlite_db: Database, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A probe still running when the server stops would use the database after it is
    # disposed: its connection then stays open until the garbage collector finds it.
    started, release = threading.Event(), threading.Event()
    probes: list[Database] = []

    def slow_probe(db: Database) -> None:
        probes.append(db)
        started.set()
        release.wait(10)

    monkeypatch.setattr(health_module, "probe_database", slow_probe)
    health = StorageHealth(sqlite_db, tmp_path, FakeClock())
    health.refresh_soon(0)
    assert started.wait(10)
    closing = threading.Thread(target=health.close)
    closing.start()
    closing.join(0.2)
    assert closing.is_alive()  # waits for the probe
    release.set()
    closing.join(10)
    assert not closing.is_alive() and health.state().checked_at is not None
    health.refresh_soon(0)  # stale, but closed: no new probe
    assert probes == [sqlite_db]


def test_a_file_where_the_data_dir_should_be_is_named(tmp_path: Path) -> None:
    path = tmp_path / "data"
    path.write_text("not a folder")
    with pytest.raises(StorageError) as exc:
        check_data_dir(path)
    assert str(path) in exc.value.message and "not a folder" in exc.value.message
    with pytest.raises(StorageError, match="not a folder"):
        check_data_dir(path / "below")


def test_a_full_disk_under_the_data_dir_is_named(tmp_path: Path) -> None:
    # A real ENOSPC from the kernel, as root too: the probe file is /dev/full.
    (tmp_path / ".cartag-write-check").symlink_to("/dev/full")
    with pytest.raises(StorageError) as exc:
        check_data_dir(tmp_path)
    assert "no space left" in exc.value.message and str(tmp_path) in exc.value.message
    with pytest.raises(StorageError, match="no space left"):
        check_data_dir(tmp_path, min_free_bytes=2**62)  # "full" by the free-space floor


def test_read_only_and_permission_errors_say_how_to_fix_them(tmp_path: Path) -> None:
    # Root writes through chmod and no read-only mount can be made here: the message is
    # what the errno the kernel gives there turns into.
    read_only = describe_os_error(tmp_path, OSError(errno.EROFS, os.strerror(errno.EROFS)))
    assert "read-only file system" in read_only and str(tmp_path) in read_only
    assert "mount it read-write or set CARTAG_DATA_DIR" in read_only
    denied = describe_os_error(tmp_path, OSError(errno.EACCES, os.strerror(errno.EACCES)))
    assert "permission denied" in denied


def test_check_store_names_the_sqlite_file(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "data")
    check_store(settings, migrate=True)
    assert (tmp_path / "data" / "cartag.db").is_file()
    unreachable = Settings(
        data_dir=tmp_path / "data",
        database_url="postgresql+psycopg://u:secret@127.0.0.1:1/nope",
    )
    with pytest.raises(StorageError) as exc:
        check_store(unreachable, migrate=False)
    assert "127.0.0.1:1/nope" in exc.value.message and "secret" not in exc.value.message
    assert "cannot be reached" in exc.value.message
