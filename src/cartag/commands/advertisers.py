"""``cartag advertisers``: per-advertiser settings (re-classification after a promotion)."""

from __future__ import annotations

import datetime as dt
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from cartag.commands.common import err, load_settings
from cartag.errors import CartagError, InputError

app = typer.Typer(help="Per-advertiser settings.", no_args_is_help=True)


@app.command("set")
def set_advertiser(
    advertiser_id: Annotated[str, typer.Argument(help="The advertiser id classify requests use.")],
    reclassify_on_promote: Annotated[
        bool | None,
        typer.Option(
            "--reclassify-on-promote/--no-reclassify-on-promote",
            help="Re-classify this advertiser's images after each promotion (fixes never change).",
        ),
    ] = None,
) -> None:
    """Change an advertiser's settings."""
    from cartag.store import advertisers as repo
    from cartag.store.db import Database, upgrade

    settings = load_settings()
    try:
        if not advertiser_id.strip() or len(advertiser_id) > 128:
            raise InputError("the advertiser id must be 1-128 characters", "advertiser_id")
        if reclassify_on_promote is None:
            raise InputError(
                "nothing to set; give --reclassify-on-promote or --no-reclassify-on-promote",
                "reclassify_on_promote",
            )
        db = Database(settings.resolved_database_url)
        upgrade(db)
        with db.write() as session:
            row = repo.set_advertiser(
                session,
                advertiser_id,
                reclassify_on_promote=reclassify_on_promote,
                now=dt.datetime.now(dt.UTC),
            )
    except CartagError as exc:
        err.print(f"[red]error:[/red] {exc.message}")
        raise typer.Exit(2) from exc
    state = "on" if row.reclassify_on_promote else "off"
    err.print(f"advertiser {row.advertiser_id}: re-classification after promotion {state}")


@app.command("list")
def list_advertisers() -> None:
    """Advertisers with images or settings, with their image and override counts."""
    from cartag.store import advertisers as repo
    from cartag.store.db import Database, upgrade

    settings = load_settings()
    try:
        db = Database(settings.resolved_database_url)
        upgrade(db)
    except CartagError as exc:
        err.print(f"[red]error:[/red] {exc.message}")
        raise typer.Exit(2) from exc
    table = Table("advertiser", "images", "overrides", "last seen", "reclassify on promote")
    with db.read() as session:
        for row in repo.advertiser_summaries(session):
            table.add_row(
                row.advertiser_id,
                str(row.images),
                str(row.overrides),
                row.last_seen_at.strftime("%Y-%m-%d %H:%M") if row.last_seen_at else "",
                "yes" if row.reclassify_on_promote else "no",
            )
    Console().print(table)
