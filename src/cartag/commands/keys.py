"""``cartag keys``: create, list and revoke API keys (scoped to advertisers or not)."""

from __future__ import annotations

import datetime as dt
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from cartag.commands.common import err, fail, load_settings, open_database
from cartag.errors import CartagError

app = typer.Typer(help="Create, list and revoke API keys.", no_args_is_help=True)


@app.command("create")
def keys_create(
    role: Annotated[
        list[str], typer.Option("--role", help="classifier, fixer, reviewer or admin (repeat).")
    ],
    name: Annotated[
        str, typer.Option(help="Who or what uses the key (the fix audit's user).")
    ] = "default",
    advertiser: Annotated[
        list[str] | None,
        typer.Option(
            "--advertiser",
            help="Scope the key to this advertiser (repeat for several): it then sees only "
            "their images and makes only their overrides. Roles classifier and fixer only.",
        ),
    ] = None,
) -> None:
    """Create an API key. The key is printed once, alone on the last line."""
    from cartag.store import apikeys

    settings = load_settings()
    try:
        db = open_database(settings)
        with db.write() as session:
            row, key = apikeys.create_key(
                session,
                name=name,
                roles=role,
                now=dt.datetime.now(dt.UTC),
                advertisers=advertiser or [],
            )
            scope = apikeys.key_advertisers(session, [row.id]).get(row.id, [])
    except CartagError as exc:
        raise fail(exc) from exc
    scoped = f", scoped to {', '.join(scope)}" if scope else ""
    created = f"created key {row.prefix} ({row.name}) with roles {row.roles}{scoped}"
    err.print(f"{created}; store it now:")
    typer.echo(key)


@app.command("list")
def keys_list() -> None:
    """List API keys (never their secrets) and the advertisers scoped keys act for."""
    from cartag.store import apikeys

    db = open_database(load_settings())
    table = Table("prefix", "name", "roles", "advertisers", "created", "revoked")
    with db.read() as session:
        rows = apikeys.list_keys(session)
        scopes = apikeys.key_advertisers(session, [row.id for row in rows])
        for row in rows:
            table.add_row(
                row.prefix,
                row.name,
                row.roles,
                ", ".join(scopes.get(row.id, [])) or "(all)",
                row.created_at.isoformat(timespec="seconds"),
                row.revoked_at.isoformat(timespec="seconds") if row.revoked_at else "",
            )
    Console().print(table)


@app.command("revoke")
def keys_revoke(
    prefix: Annotated[str, typer.Argument(help="The key's prefix (see list).")],
) -> None:
    """Revoke an API key (and end its browser sessions)."""
    from cartag.store import apikeys

    db = open_database(load_settings())
    now = dt.datetime.now(dt.UTC)
    try:
        with db.write() as session:
            row = apikeys.revoke_key(session, prefix, now)
            revoked_at = row.revoked_at
    except CartagError as exc:
        raise fail(exc) from exc
    if revoked_at is not None and revoked_at != now:
        err.print(
            f"key {row.prefix} ({row.name}) was revoked already, at {revoked_at:%Y-%m-%d %H:%M} UTC"
        )
        return
    err.print(f"revoked key {row.prefix} ({row.name})")
