"""What every CLI command shares: the stderr console, settings, errors, the database.

Settings errors and :class:`~cartag.errors.CartagError` become a red one-line message and
exit code 2, never a traceback.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import typer
from pydantic import ValidationError
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
    except ValidationError as exc:
        for error in exc.errors():
            name = "CARTAG_" + "_".join(str(part) for part in error["loc"]).upper()
            value = error.get("input")
            shown = "" if isinstance(value, dict) else f"={value}"
            err.print(f"[red]error:[/red] invalid setting {name}{shown}: {error['msg']}")
        raise typer.Exit(2) from exc
    except Exception as exc:  # noqa: BLE001 - e.g. a malformed list value
        err.print(f"[red]error:[/red] invalid CARTAG_* setting: {exc}")
        raise typer.Exit(2) from exc


def fail(exc: CartagError) -> typer.Exit:
    """Print ``exc``'s message; raise the returned Exit (code 2)."""
    err.print(f"[red]error:[/red] {exc.message}")
    return typer.Exit(2)


def open_database(settings: Settings) -> Database:
    """The configured store, migrated to the newest schema."""
    from sqlalchemy.exc import OperationalError

    from cartag.store.db import Database, upgrade

    db = Database(settings.resolved_database_url)
    try:
        upgrade(db)
    except OperationalError as exc:
        db.dispose()
        raise unreachable_database(settings, exc) from exc
    return db


def unreachable_database(settings: Settings, exc: BaseException) -> typer.Exit:
    """Say in one line that the database cannot be reached, and which setting names it."""
    from cartag.redaction import strip_password

    reason = str(getattr(exc, "orig", None) or exc).strip().splitlines()[0]
    err.print(
        f"[red]error:[/red] cannot reach the database "
        f"{strip_password(settings.resolved_database_url)} ({reason}); check "
        "CARTAG_DATABASE_URL and that the database server is running"
    )
    return typer.Exit(2)
