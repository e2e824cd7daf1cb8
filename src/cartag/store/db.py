"""Engine and transaction helpers for SQLite (default) and PostgreSQL.

Every write runs in one transaction. On SQLite a writer takes the database
lock up front (``BEGIN IMMEDIATE``): a deferred transaction that reads then
writes can fail with "database is locked" instead of waiting its turn.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, event
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.orm import Session, sessionmaker

from cartag.errors import ConfigError

MIGRATIONS_DIR = Path(__file__).with_name("migrations")


class Database:
    """Owns the engine; hands out read and write sessions.

    Args:
        url: SQLAlchemy URL (``sqlite:///path`` or ``postgresql+psycopg://...``).
        connect_args: Extra DB-API connect arguments (tests pass a PostgreSQL
            ``options=-csearch_path=...`` to isolate themselves in a schema).
    """

    def __init__(self, url: str, *, connect_args: dict[str, Any] | None = None) -> None:
        try:
            parsed = make_url(url)
        except Exception as exc:  # noqa: BLE001 - sqlalchemy raises several types
            raise ConfigError(
                f"CARTAG_DATABASE_URL {url!r} is not a database URL: {exc}. "
                "Use sqlite:///path/to/cartag.db or postgresql+psycopg://user@host/db."
            ) from exc
        self.url = url
        self.dialect = parsed.get_backend_name()
        args = dict(connect_args or {})
        if self.dialect == "sqlite":
            database = parsed.database
            if database and database != ":memory:":
                try:
                    Path(database).parent.mkdir(parents=True, exist_ok=True)
                except OSError as exc:
                    raise ConfigError(
                        f"cannot create the folder of the SQLite database {database} "
                        f"({exc.strerror or exc}); set CARTAG_DATA_DIR to a writable folder "
                        "(or CARTAG_DATABASE_URL to another database)"
                    ) from exc
            # The driver's own transaction handling is switched off so that
            # SQLAlchemy's begin event below decides how each transaction starts.
            args.setdefault("isolation_level", None)
            args.setdefault("check_same_thread", False)
            args.setdefault("timeout", 30)
            self.engine: Engine = create_engine(url, connect_args=args)
            event.listen(self.engine, "connect", _sqlite_on_connect)
            event.listen(self.engine, "begin", _sqlite_on_begin)
        elif self.dialect == "postgresql":
            self.engine = create_engine(
                url, connect_args=args, pool_size=10, max_overflow=20, pool_pre_ping=True
            )
        else:
            raise ConfigError(
                f"database backend {self.dialect!r} is not supported; use SQLite or PostgreSQL."
            )
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)

    @contextmanager
    def write(self) -> Iterator[Session]:
        """A session in one write transaction, committed on success, rolled back on error."""
        with self._sessions() as session:
            conn = session.connection(execution_options={"cartag_write": True})
            del conn
            try:
                yield session
                session.commit()
            except BaseException:
                session.rollback()
                raise

    @contextmanager
    def read(self) -> Iterator[Session]:
        """A session for reads; closing it ends the transaction.

        Objects read stay usable after the block (closing detaches them without
        expiring their loaded attributes, unlike a rollback).
        """
        with self._sessions() as session:
            yield session

    def dispose(self) -> None:
        self.engine.dispose()


def _sqlite_on_connect(dbapi_conn: Any, _record: Any) -> None:
    cursor = dbapi_conn.cursor()
    # WAL lets readers proceed while a writer holds the lock.
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.close()


def _sqlite_on_begin(conn: Any) -> None:
    if conn.get_execution_options().get("cartag_write"):
        conn.exec_driver_sql("BEGIN IMMEDIATE")
    else:
        conn.exec_driver_sql("BEGIN")


def _alembic_config() -> Any:
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    return cfg


def upgrade(db: Database, revision: str = "head") -> None:
    """Apply the Alembic migrations up to ``revision`` (idempotent)."""
    from alembic import command

    cfg = _alembic_config()
    with db.engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, revision)


def downgrade(db: Database, revision: str) -> None:
    """Revert the migrations down to ``revision`` (``base`` = empty database)."""
    from alembic import command

    cfg = _alembic_config()
    with db.engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.downgrade(cfg, revision)


def revisions() -> list[str]:
    """The migrations shipped with this version of cartag, oldest first."""
    from alembic.script import ScriptDirectory

    script = ScriptDirectory.from_config(_alembic_config())
    return [rev.revision for rev in reversed(list(script.walk_revisions()))]


def head_revision() -> str:
    """The newest migration shipped with this version of cartag."""
    from alembic.script import ScriptDirectory

    head = ScriptDirectory.from_config(_alembic_config()).get_current_head()
    assert head is not None
    return head


def current_revision(db: Database) -> str | None:
    """The revision the database is at, or None for an empty database."""
    from alembic.runtime.migration import MigrationContext

    with db.engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()
