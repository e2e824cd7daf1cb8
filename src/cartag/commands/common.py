"""What every CLI command shares: the stderr console, settings, errors, the database.

Settings errors and :class:`~cartag.errors.CartagError` become a red one-line message and
exit code 2, never a traceback.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import typer
from pydantic import ValidationError
from rich.console import Console

from cartag.errors import CartagError, InputError
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
    """The configured store, migrated to the newest schema.

    Every way it can fail (a bad URL, a data dir that cannot be made, a server that
    does not answer, a file that is not a database) is one line and exit 2.
    """
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import DatabaseError, OperationalError

    from cartag.store.db import Database, upgrade

    try:
        url = make_url(settings.resolved_database_url)
    except Exception:  # noqa: BLE001 - a bad URL is reported by Database below
        url = None
    if (
        url is not None
        and url.get_backend_name() == "sqlite"
        and url.database in (None, "", ":memory:")
    ):
        raise fail(
            InputError(
                "CARTAG_DATABASE_URL is an in-memory SQLite database: what a command stores "
                "would be gone when it exits; leave it unset (a SQLite file in the data dir) "
                "or name a file or a server",
                field="CARTAG_DATABASE_URL",
            )
        )
    try:
        db = Database(settings.resolved_database_url)
    except CartagError as exc:
        raise fail(exc) from exc
    try:
        upgrade(db)
    except OperationalError as exc:
        db.dispose()
        raise unreachable_database(settings, exc) from exc
    except DatabaseError as exc:
        db.dispose()
        raise unusable_database(settings, exc) from exc
    return db


def unreachable_database(settings: Settings, exc: BaseException) -> typer.Exit:
    """Say in one line that the database cannot be reached, and which setting names it."""
    from cartag.redaction import strip_password
    from cartag.store.health import driver_message

    url = settings.resolved_database_url
    if url.startswith("sqlite"):
        err.print(
            f"[red]error:[/red] cannot open the SQLite database {strip_password(url)} "
            f"({driver_message(exc)}); check that CARTAG_DATA_DIR is a writable folder and its "
            "cartag.db a database file (or set CARTAG_DATABASE_URL)"
        )
    else:
        err.print(
            f"[red]error:[/red] cannot reach the database {strip_password(url)} "
            f"({driver_message(exc)}); check CARTAG_DATABASE_URL and that the database server "
            "is running"
        )
    return typer.Exit(2)


def unusable_database(settings: Settings, exc: BaseException) -> typer.Exit:
    """Say in one line that the configured database is not one cartag can use."""
    from cartag.redaction import strip_password
    from cartag.store.health import driver_message

    err.print(
        f"[red]error:[/red] {strip_password(settings.resolved_database_url)} cannot be used as "
        f"cartag's database ({driver_message(exc)}); move the file away or point "
        "CARTAG_DATABASE_URL / CARTAG_DATA_DIR elsewhere"
    )
    return typer.Exit(2)


def _as_named(path: Path) -> Path:
    # Absolute, ".." folded, links NOT followed: where the path sits in the folders given.
    return Path(os.path.normpath(path.expanduser().absolute()))


def overwritten_input(path: Path, inputs: Sequence[Path]) -> Path | None:
    """The input ``path`` would overwrite: one of ``inputs`` itself, or the folder of one
    holding an existing file at ``path``; None when it overwrites none.

    Compared both resolved and as named: a folder of links to photos elsewhere (how the
    shared data is usually gathered) holds its files as links, and resolving only the
    output sent ``photos/Dealer/a.jpg`` out of ``photos/``, so a report replaced the photo
    the link points at.
    """
    for resolve in (lambda p: p.expanduser().resolve(), _as_named):
        target = resolve(path)
        sources = [resolve(source) for source in inputs]
        for source in sorted(sources, key=lambda s: s != target):  # the file itself first
            if target == source or (
                target.exists() and source.is_dir() and source in target.parents
            ):
                return source
    return None


def check_output(path: Path, option: str, settings: Settings, inputs: Sequence[Path] = ()) -> None:
    """Refuse, before any work, an output path that cannot be written or must not be.

    Checked: not the database nor one of its files (``dataset export --out`` once
    replaced the live SQLite database), not one of the command's ``inputs`` nor a file
    already in an input folder (an HTML report written over the labels CSV), not a
    folder, and a parent that is a folder or can be made.

    Raises:
        InputError: Naming ``option``: what is wrong and what to give instead.
    """
    from sqlalchemy.engine import make_url

    target = path.expanduser().resolve()
    try:
        database = make_url(settings.resolved_database_url).database
    except Exception:  # noqa: BLE001 - a bad URL is reported where the database is opened
        database = None
    if database and database != ":memory:":
        live = Path(database).expanduser().resolve()
        if target in {live, live.with_name(live.name + "-wal"), live.with_name(live.name + "-shm")}:
            raise InputError(f"{option} {path} is cartag's database: choose another file", option)
    source = overwritten_input(path, inputs)
    if source is not None:
        raise InputError(
            f"{option} {path} would overwrite an input ({source}): choose a file elsewhere",
            option,
        )
    if target.is_dir():
        raise InputError(f"{option} {path} is a folder: give a file path", option)
    for parent in target.parents:
        if parent.exists():
            if not parent.is_dir():
                raise InputError(
                    f"{option} {path} cannot be written: {parent} is a file, not a folder",
                    option,
                )
            break


def replace_file(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file in its folder, then rename it.

    Written in place, an output interrupted part-way (a full disk, Ctrl-C) left a
    truncated file where the previous one was, and a reader could see half of one; now
    the file is the old one or the new one, whole. A link is followed: its target is
    replaced, the link kept.

    Raises:
        OSError: The folder or the file cannot be written (the old file is kept).
    """
    from cartag.models.engine import write_atomic

    target = path.resolve() if path.is_symlink() else path
    write_atomic(target, text.encode("utf-8"))
