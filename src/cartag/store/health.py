"""Is the store usable? Storage failures named, write probes, and the data-dir check.

A full disk, a read-only mount or an unreachable database is not a bug: the API answers
503 ``storage_unavailable`` (:func:`storage_problem` tells such errors from real bugs),
``/readyz`` runs :class:`StorageHealth`'s write probe, and ``cartag serve`` refuses to
start on a data dir it cannot write (:func:`check_data_dir`), saying why and what to do.
"""

from __future__ import annotations

import datetime as dt
import errno
import logging
import os
import shutil
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from sqlalchemy import exc as sa_exc
from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session

from cartag.clock import Clock
from cartag.errors import StorageError
from cartag.settings import Settings
from cartag.store.db import Database, upgrade

log = logging.getLogger(__name__)

# Below this many free bytes a data dir counts as full: SQLite, the model cache and the
# blob store all need room to write, and a start that fails later fails less clearly.
MIN_FREE_BYTES: Final[int] = 1 << 20
PROBE_NAME: Final[str] = ".cartag-write-check"

FULL: Final[str] = (
    "the database's disk is full; free space on the volume that holds it "
    "(SQLite: the CARTAG_DATA_DIR volume)"
)
READ_ONLY: Final[str] = (
    "the database is read-only; make it writable (file system mounted read-write, file "
    "permissions, or a PostgreSQL primary rather than a standby)"
)
UNREACHABLE: Final[str] = (
    "the database cannot be reached; check that it is running and that "
    "CARTAG_DATABASE_URL points at it"
)
BUSY: Final[str] = "the database is busy (locked or timed out); retry shortly"
IO_ERROR: Final[str] = "the database's disk reports an I/O error; check the volume"
FAILED: Final[str] = "the database failed; the server log has the details"

_SQLITE_HINTS: Final[tuple[tuple[str, str], ...]] = (
    ("disk is full", FULL),
    ("no space left", FULL),
    ("readonly", READ_ONLY),
    ("read-only", READ_ONLY),
    ("unable to open database", UNREACHABLE),
    ("connection refused", UNREACHABLE),
    ("connection failed", UNREACHABLE),
    ("could not connect", UNREACHABLE),
    ("could not translate host name", UNREACHABLE),
    ("server closed the connection", UNREACHABLE),
    ("timeout expired", UNREACHABLE),
    ("database is locked", BUSY),
    ("disk i/o error", IO_ERROR),
)


def driver_message(exc: BaseException) -> str:
    """The first line of the database driver's own words about ``exc`` (not the SQL)."""
    lines = str(getattr(exc, "orig", None) or exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__


def storage_problem(exc: BaseException) -> str | None:
    """What is wrong with the store, when ``exc`` is a storage failure rather than a bug.

    Recognises SQLite's and PostgreSQL's disk-full, read-only, unreachable, busy and
    I/O errors (by message and SQLSTATE), a connection pool that timed out, and
    :class:`~cartag.errors.StorageError`.

    Returns:
        A message for people (no SQL, no driver text), or None for any other error
        (a constraint violation, a programming error: those stay 500s).
    """
    if isinstance(exc, StorageError):
        return exc.message
    if isinstance(exc, sa_exc.TimeoutError):
        return BUSY  # every pooled connection is in use: the database is too slow or down
    if not isinstance(exc, sa_exc.DBAPIError):
        return None
    if exc.connection_invalidated:
        return UNREACHABLE
    orig = exc.orig
    sqlstate = str(getattr(orig, "sqlstate", None) or "")
    if sqlstate:
        if sqlstate == "53100":
            return FULL
        if sqlstate == "25006":
            return READ_ONLY
        if sqlstate.startswith("08") or sqlstate in ("57P01", "57P02", "57P03"):
            return UNREACHABLE
        if sqlstate in ("55P03", "57014", "40P01"):
            return BUSY
        if sqlstate.startswith("58"):
            return IO_ERROR
    message = str(orig).lower()
    for needle, problem in _SQLITE_HINTS:
        if needle in message:
            return problem
    if isinstance(exc, sa_exc.OperationalError):
        return FAILED
    return None


def as_storage_error(exc: BaseException) -> StorageError | None:
    """``exc`` as a :class:`StorageError` (503), or None when it is not a storage failure."""
    if isinstance(exc, StorageError):
        return exc
    problem = storage_problem(exc)
    return None if problem is None else StorageError(f"storage unavailable: {problem}")


# --- probes ----------------------------------------------------------------------------


def ping(session: Session) -> None:
    """A read round trip to the database (raises what the driver raises)."""
    session.execute(text("SELECT 1"))


def probe_database(db: Database) -> None:
    """Commit a write that changes nothing; raises what a real write would raise.

    A rolled-back write never reaches the disk, so a full disk would pass it; this one
    commits (SQLite: the header's ``user_version`` set to itself, a page in the WAL;
    PostgreSQL: the Alembic version row updated to itself, a WAL record).

    Raises:
        sqlalchemy.exc.DBAPIError: The database cannot be written (see :func:`storage_problem`).
    """
    with db.write() as session:
        if db.dialect == "sqlite":
            version = int(session.execute(text("PRAGMA user_version")).scalar() or 0)
            session.execute(text(f"PRAGMA user_version = {version}"))
            return
        session.execute(text("SET LOCAL statement_timeout = '5s'"))
        if session.execute(text("SELECT to_regclass('alembic_version')")).scalar() is not None:
            session.execute(text("UPDATE alembic_version SET version_num = version_num"))


def describe_os_error(path: Path, exc: OSError) -> str:
    """Why ``path`` cannot be written, and how to fix it, from an OSError's errno."""
    where = f"the data dir {path} (CARTAG_DATA_DIR)"
    elsewhere = "or set CARTAG_DATA_DIR to a writable folder"
    if exc.errno == errno.EROFS:
        return f"{where} is on a read-only file system; mount it read-write {elsewhere}"
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return (
            f"no space left on the disk that holds {where}; free some space {elsewhere} "
            "on another disk"
        )
    if exc.errno in (errno.EACCES, errno.EPERM):
        return (
            f"{where} is not writable (permission denied); give the user running cartag "
            f"write access {elsewhere}"
        )
    if exc.errno in (errno.ENOTDIR, errno.EEXIST):
        return f"{where} is not a folder (a file is in the way); move the file {elsewhere}"
    reason = exc.strerror or str(exc)
    return f"{where} cannot be written ({reason}); fix the folder {elsewhere}"


def check_data_dir(path: Path, *, min_free_bytes: int = MIN_FREE_BYTES) -> None:
    """Create ``path`` if needed and prove it can be written: a file written, synced, removed.

    Args:
        path: The data dir.
        min_free_bytes: Less free space than this counts as a full disk.

    Raises:
        StorageError: Naming the path, what is wrong ("read-only file system", "no space
            left", "permission denied", "not a folder") and how to fix it.
    """
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise StorageError(describe_os_error(path, exc)) from exc
    if not path.is_dir():
        raise StorageError(describe_os_error(path, OSError(errno.ENOTDIR, "not a folder")))
    probe = path / PROBE_NAME
    try:
        with open(probe, "wb") as handle:
            # A few KiB, flushed and synced: a full disk fails here, not at close.
            handle.write(b"\0" * 4096)
            handle.flush()
            os.fsync(handle.fileno())
    except OSError as exc:
        raise StorageError(describe_os_error(path, exc)) from exc
    finally:
        try:
            probe.unlink(missing_ok=True)
        except OSError:
            log.warning("could not remove %s", probe)
    free = shutil.disk_usage(path).free
    if free < min_free_bytes:
        raise StorageError(
            describe_os_error(path, OSError(errno.ENOSPC, "no space left"))
            + f" ({free} bytes free)"
        )


def check_store(settings: Settings, *, migrate: bool) -> None:
    """What ``cartag serve`` checks before it starts: the data dir and the database take writes.

    Args:
        settings: ``data_dir`` and the database URL.
        migrate: Also bring the database to the newest schema (as the server would).

    Raises:
        StorageError: Naming the folder, SQLite file or database, what is wrong
            (read-only, no space left, unreachable...) and how to fix it.
    """
    check_data_dir(settings.data_dir)
    try:
        url = make_url(settings.resolved_database_url)
    except Exception:  # noqa: BLE001 - sqlalchemy raises several types
        # Database() says what is wrong with it, and what to write instead.
        Database(settings.resolved_database_url)
        raise
    if url.get_backend_name() == "sqlite" and url.database and url.database != ":memory:":
        where = f"the SQLite database {url.database}"
        folder = Path(url.database).parent
        if folder.resolve() != settings.data_dir.resolve():
            check_data_dir(folder)
    else:
        where = f"the database {url.render_as_string(hide_password=True)}"
    db = Database(settings.resolved_database_url)
    try:
        if migrate:
            upgrade(db)
        probe_database(db)
    except Exception as exc:
        problem = storage_problem(exc)
        if problem is None and isinstance(exc, sa_exc.DBAPIError):
            # Not the storage (a file that is not a database, a foreign schema): the
            # driver's words, and what to do.
            raise StorageError(
                f"cannot use {where} ({driver_message(exc)}): move it away, or point "
                "CARTAG_DATABASE_URL or CARTAG_DATA_DIR elsewhere"
            ) from exc
        if problem is None:
            raise
        if problem == FAILED:  # on the command line, the driver's words are the details
            problem = driver_message(exc)
        raise StorageError(f"cannot write {where}: {problem}") from exc
    finally:
        db.dispose()


# --- what /healthz and /readyz report ------------------------------------------------


@dataclass(frozen=True)
class StorageState:
    """The last thing known about the store.

    Attributes:
        ok: The last probe succeeded and no storage failure was seen since.
        problem: What is wrong (None when ok).
        checked_at: When it was learnt (None: never checked).
    """

    ok: bool
    problem: str | None
    checked_at: dt.datetime | None

    def to_dict(self) -> dict[str, object]:
        return {
            "ok": self.ok,
            "problem": self.problem,
            "checked_at": self.checked_at.isoformat() if self.checked_at else None,
        }


class StorageHealth:
    """Probes the store for writes (at most one probe at a time) and remembers failures.

    ``/readyz`` calls :meth:`check`; ``/healthz`` reads :meth:`state` and, when it is
    stale, starts a probe in the background (:meth:`refresh_soon`), so liveness never
    waits on the database. Requests that hit a storage error report it through
    :meth:`failed`, so the health endpoints know at once.

    Args:
        db: The store.
        data_dir: Also checked for writes (caches, model files, SQLite).
        clock: Time source.
        max_age_s: A probe result younger than this is reused.
    """

    def __init__(self, db: Database, data_dir: Path, clock: Clock, *, max_age_s: float = 2.0):
        self.db = db
        self.data_dir = data_dir
        self.clock = clock
        self.max_age_s = max_age_s
        self._state = StorageState(ok=True, problem=None, checked_at=None)
        self._lock = threading.Lock()
        self._probing = threading.Lock()
        self._closed = False

    def state(self) -> StorageState:
        with self._lock:
            return self._state

    def failed(self, problem: str) -> None:
        """Record a storage failure seen elsewhere (a request, a job, a bookkeeping write)."""
        with self._lock:
            self._state = StorageState(ok=False, problem=problem, checked_at=self.clock.now())

    def _stale(self, max_age_s: float) -> bool:
        checked = self.state().checked_at
        return checked is None or (self.clock.now() - checked).total_seconds() >= max_age_s

    def check(self, max_age_s: float | None = None) -> StorageState:
        """Probe the database and the data dir, unless the last result is younger than
        ``max_age_s`` (default: the constructor's); waits for a probe already running."""
        max_age = self.max_age_s if max_age_s is None else max_age_s
        with self._probing:
            if self._stale(max_age):
                self._probe()
        return self.state()

    def refresh_soon(self, max_age_s: float) -> None:
        """Start a probe in a background thread if the last result is older than
        ``max_age_s`` and none is running; never blocks."""
        if not self._stale(max_age_s) or not self._probing.acquire(blocking=False):
            return
        if self._closed:
            self._probing.release()
            return

        def run() -> None:
            try:
                self._probe()
            finally:
                self._probing.release()

        threading.Thread(target=run, name="cartag-storage-probe", daemon=True).start()

    def close(self, timeout_s: float = 10.0) -> None:
        """Start no more background probes and wait for the one running, if any.

        Called when the server stops, before its database is disposed: a probe still
        running then would put its connection back into a pool that nobody closes (or
        open one in the engine's new pool), left open until the garbage collector finds it.
        """
        self._closed = True
        if self._probing.acquire(timeout=timeout_s):
            self._probing.release()
        else:
            log.warning("storage probe: still running after %.0f s at shutdown", timeout_s)

    def _probe(self) -> None:
        problem: str | None = None
        try:
            probe_database(self.db)
        except Exception as exc:  # noqa: BLE001 - every failure is reported, none raised
            problem = storage_problem(exc) or FAILED
            log.warning("storage probe: the database cannot be written: %s (%s)", problem, exc)
        if problem is None:
            try:
                check_data_dir(self.data_dir, min_free_bytes=0)
            except StorageError as exc:
                problem = exc.message
                log.warning("storage probe: %s", problem)
            except Exception as exc:  # noqa: BLE001 - e.g. the folder vanished
                problem = f"the data dir {self.data_dir} cannot be checked: {exc}"
                log.warning("storage probe: %s", problem)
        with self._lock:
            self._state = StorageState(
                ok=problem is None, problem=problem, checked_at=self.clock.now()
            )
