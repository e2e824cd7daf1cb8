"""An injected full disk: a SQLite database whose writes fail as they do when the disk fills.

The real disk is never filled: an engine event raises the error SQLite raises then
(``sqlite3.OperationalError: database or disk is full``), which SQLAlchemy wraps as it
wraps the real one.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import event

from cartag.store.db import Database

_WRITES = ("INSERT", "UPDATE", "DELETE", "REPLACE")


def _is_write(statement: str) -> bool:
    words = statement.lstrip().split(None, 2)
    if not words:
        return False
    verb = words[0].upper()
    if verb == "PRAGMA":  # PRAGMA user_version = N writes the header; PRAGMA x reads
        return "=" in statement
    return verb in _WRITES


class FullDisk:
    """Switchable full disk for one SQLite :class:`Database`.

    Attributes:
        full: While True, every write statement fails.
        only: When set, only write statements containing this text fail.
        failures: How many writes failed so far.
    """

    def __init__(self, db: Database, *, only: str | None = None) -> None:
        if db.dialect != "sqlite":
            raise ValueError("FullDisk raises SQLite's error; use it on a SQLite database")
        self.db = db
        self.full = False
        self.only = only
        self.failures = 0

    def _hook(self, _conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        if not self.full or not _is_write(statement):
            return
        if self.only is not None and self.only not in statement:
            return
        self.failures += 1
        raise sqlite3.OperationalError("database or disk is full")

    @contextmanager
    def installed(self) -> Iterator[FullDisk]:
        event.listen(self.db.engine, "before_cursor_execute", self._hook)
        try:
            yield self
        finally:
            event.remove(self.db.engine, "before_cursor_execute", self._hook)


@contextmanager
def full_disk(db: Database, *, full: bool = True, only: str | None = None) -> Iterator[FullDisk]:
    """A :class:`FullDisk` installed on ``db`` for the block (full at once unless told)."""
    disk = FullDisk(db, only=only)
    disk.full = full
    with disk.installed():
        yield disk
