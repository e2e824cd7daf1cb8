"""What every CLI command shares: the stderr console, settings, errors, the database.

Settings errors and :class:`~cartag.errors.CartagError` become a red one-line message and
exit code 2, never a traceback.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import typer
from rich.console import Console

from cartag.errors import CartagError
from cartag.settings import Settings, get_settings

if TYPE_CHECKING:
    from cartag.store.db import Database

err = Console(stderr=True, soft_wrap=True)


def load_settings() -> Settings:
    """The ``CARTAG_*`` settings; an invalid one is reported and exits 2."""
    try:
        return get_settings()
    except Exception as exc:  # noqa: BLE001 - pydantic's message names the variable
        err.print(f"[red]error:[/red] invalid CARTAG_* setting: {exc}")
        raise typer.Exit(2) from exc


def fail(exc: CartagError) -> typer.Exit:
    """Print ``exc``'s message; raise the returned Exit (code 2)."""
    err.print(f"[red]error:[/red] {exc.message}")
    return typer.Exit(2)


def open_database(settings: Settings) -> Database:
    """The configured store, migrated to the newest schema."""
    from cartag.store.db import Database, upgrade

    db = Database(settings.resolved_database_url)
    upgrade(db)
    return db
