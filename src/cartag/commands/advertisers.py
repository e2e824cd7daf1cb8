"""``cartag advertisers``: per-advertiser settings (re-classification after a promotion,
answers adapted to the advertiser's fixes)."""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.table import Table

from cartag.commands.common import err, load_settings, open_database
from cartag.errors import CartagError, InputError
from cartag.vocab import check_advertiser_id

if TYPE_CHECKING:
    from cartag.store.advertisers import SummaryPage

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
    adapt_answers: Annotated[
        bool | None,
        typer.Option(
            "--adapt-answers/--no-adapt-answers",
            help="Adapt this advertiser's answers to its fixes (source advertiser_model), or not.",
        ),
    ] = None,
    adapt_default: Annotated[
        bool,
        typer.Option(
            "--adapt-default",
            help="Drop its own adaptation setting: follow CARTAG_ADVERTISER_ADAPTATION.",
        ),
    ] = False,
) -> None:
    """Change an advertiser's settings (those not given keep their value)."""
    from cartag.store import advertisers as repo

    settings = load_settings()
    try:
        # The API's ids only: an id it refuses could never be reached from it.
        check_advertiser_id(advertiser_id)
        if adapt_default and adapt_answers is not None:
            raise InputError(
                "give --adapt-answers, --no-adapt-answers or --adapt-default, not two",
                "adapt_answers",
            )
        if reclassify_on_promote is None and adapt_answers is None and not adapt_default:
            raise InputError(
                "nothing to set; give --reclassify-on-promote / --no-reclassify-on-promote, "
                "--adapt-answers / --no-adapt-answers or --adapt-default",
                "reclassify_on_promote",
            )
        db = open_database(settings)
        with db.write() as session:
            row = repo.set_advertiser(
                session,
                advertiser_id,
                reclassify_on_promote=(
                    repo.KEEP if reclassify_on_promote is None else reclassify_on_promote
                ),
                adapt_answers=None
                if adapt_default
                else (repo.KEEP if adapt_answers is None else adapt_answers),
                now=dt.datetime.now(dt.UTC),
            )
    except CartagError as exc:
        err.print(f"[red]error:[/red] {exc.message}")
        raise typer.Exit(2) from exc
    state = "on" if row.reclassify_on_promote else "off"
    adapting = _adapting(row.adapt_answers, settings.advertiser_adaptation)
    err.print(
        f"advertiser {row.advertiser_id}: re-classification after promotion {state}; "
        f"answers adapted to its fixes: {adapting}"
    )


def _adapting(own: bool | None, default: bool) -> str:
    """Its adaptation as said: on/off, and whether that is its own setting."""
    on = default if own is None else own
    return f"{'on' if on else 'off'} ({'the default' if own is None else 'its own setting'})"


@app.command("list")
def list_advertisers(
    search: Annotated[
        str,
        typer.Option(
            "--search", help="Only advertisers whose id holds this, ignoring case (any part)."
        ),
    ] = "",
    page: Annotated[
        int, typer.Option(min=1, help="Which page (1 first; past the end: the last).")
    ] = 1,
    limit: Annotated[
        int | None,
        typer.Option(min=1, help="Advertisers per page (default 100, at most 500)."),
    ] = None,
) -> None:
    """Advertisers with images or settings, with their image and override counts, by id, a
    page at a time (as GET /v1/advertisers)."""
    from cartag.store import advertisers as repo

    settings = load_settings()
    if limit is not None and limit > repo.MAX_PAGE_LIMIT:
        err.print(f"[red]error:[/red] --limit is at most {repo.MAX_PAGE_LIMIT} (not {limit})")
        raise typer.Exit(2)
    db = open_database(settings)
    table = Table(
        "advertiser", "images", "overrides", "last seen", "reclassify on promote", "adapt answers"
    )
    with db.read() as session:
        found = repo.summary_page(
            session, search=search.strip(), page=page, limit=limit or repo.PAGE_LIMIT
        )
    for row in found.summaries:
        table.add_row(
            row.advertiser_id,
            str(row.images),
            str(row.overrides),
            row.last_seen_at.strftime("%Y-%m-%d %H:%M") if row.last_seen_at else "",
            "yes" if row.reclassify_on_promote else "no",
            _adapting(row.adapt_answers, settings.advertiser_adaptation),
        )
    Console().print(table)
    # On stderr: the table alone stays on stdout for scripts.
    err.print(_page_line(found), markup=False, highlight=False)


def _page_line(found: SummaryPage) -> str:
    """Where this page lies among the matching advertisers, and how to see the others."""
    searched = f" whose id holds {found.search!r}" if found.search else ""
    if not found.total:
        return f"no advertisers{searched}"
    first = (found.page - 1) * found.limit + 1
    last = first + len(found.summaries) - 1
    line = (
        f"advertisers {first:,}–{last:,} of {found.total:,}{searched} "
        f"(page {found.page:,} of {found.pages:,})"
    )
    if found.pages > 1:
        line += "; --page N for another"
    return line
