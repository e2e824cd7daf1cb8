"""``cartag monitor report``: the figures of the /monitor page, as Rich tables or JSON."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from cartag.commands.common import err, load_settings, open_database
from cartag.errors import CartagError, InputError
from cartag.vocab import check_advertiser_id

if TYPE_CHECKING:
    from cartag.deploy.drift import DriftReport

app = typer.Typer(help="Monitoring: answer mix and manual-fix rates.", no_args_is_help=True)


def _pct(rate: float | None) -> str:
    return "—" if rate is None else f"{rate * 100:.2f}%"


def _mix(counts: dict[str, int], top: int = 4) -> str:
    total = sum(counts.values())
    if not total:
        return ""
    ranked = sorted(counts.items(), key=lambda kv: -kv[1])[:top]
    return " ".join(f"{name} {n / total * 100:.0f}%" for name, n in ranked)


def _jsonable(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        out = {f.name: _jsonable(getattr(value, f.name)) for f in dataclasses.fields(value)}
        if hasattr(value, "rate") and isinstance(value.rate, float | None):
            out["rate"] = value.rate
        return out
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, dt.date):
        return value.isoformat()
    return value


# The earliest --until: a report also reads the weeks before its first day.
_FIRST_DAY = dt.date(2000, 1, 1)


def _parse_until(text: str | None) -> dt.datetime:
    if text is None:
        return dt.datetime.now(dt.UTC)
    try:
        day = dt.date.fromisoformat(text.strip())
    except ValueError:
        raise InputError(
            f"--until {text!r} is not a date; use e.g. 2026-11-30", field="until"
        ) from None
    today = dt.datetime.now(dt.UTC).date()
    if day < _FIRST_DAY:
        # The report reaches weeks before --until: 0001-01-08 overflowed the calendar.
        raise InputError(
            f"--until {day} is before {_FIRST_DAY}; nothing is recorded that early",
            field="until",
        )
    if day > today:
        # Nothing is recorded after today (and 9999-12-31 overflowed the period's end).
        raise InputError(
            f"--until {day} is in the future; the last day can be today ({today}) at most",
            field="until",
        )
    return dt.datetime.combine(day, dt.time(23, 59, 59), dt.UTC)


@app.command("report")
def report(
    since: Annotated[
        str, typer.Option(help="First day: a period back from --until (24h, 7d, 2w) or a date.")
    ] = "7d",
    until: Annotated[str | None, typer.Option(help="Last day (UTC date); default: today.")] = None,
    advertiser: Annotated[
        str | None, typer.Option(help="Restrict the per-version figures to one advertiser.")
    ] = None,
    limit: Annotated[int, typer.Option(min=1, help="Advertisers listed at most.")] = 50,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
) -> None:
    """Answer mix and manual-fix rate per model version, day and advertiser; flags jumps."""
    from cartag.deploy.drift import drift_now
    from cartag.deploy.monitor import report_since

    settings = load_settings()
    try:
        if advertiser is not None:
            # An id no request could carry matches nothing: the report would be empty
            # (or, for "", unrestricted) without a word.
            check_advertiser_id(advertiser, "--advertiser")
        now = _parse_until(until)
        db = open_database(settings)
        try:
            with db.read() as session:
                result = report_since(session, settings, since, now, advertiser=advertiser)
                drift = _drift_rows(drift_now(session, settings, now, advertiser), limit)
        finally:
            db.dispose()
    except CartagError as exc:
        err.print(f"[red]error:[/red] {exc.message}")
        raise typer.Exit(2) from exc

    if as_json:
        payload = _jsonable(result)
        payload["advertisers"] = payload["advertisers"][:limit]
        payload["rule"] = result.thresholds.explain()
        payload["drift"] = drift
        typer.echo(json.dumps(payload, indent=2))
        return

    out = Console()
    scope = f" · advertiser {advertiser}" if advertiser else ""
    out.print(
        f"[bold]cartag monitor[/bold] {result.since} → {result.until} (UTC){scope}: "
        f"{result.total.classified} answers, {result.total.fixes} fixes, "
        f"fix rate {_pct(result.total.rate)}, {len(result.jumped)} advertiser(s) flagged"
    )

    versions = Table(title="Per model version and day")
    for column in ("model version", "day", "answers", "fixes", "fix rate", "types", "colors"):
        versions.add_column(
            column, justify="left" if column in ("model version", "day") else "right"
        )
    for vd in result.version_days:
        versions.add_row(
            vd.version,
            vd.day.isoformat(),
            str(vd.rate.classified),
            str(vd.rate.fixes),
            _pct(vd.rate.rate),
            _mix(vd.types),
            _mix(vd.colors),
        )
    out.print(versions)

    advertisers = Table(title="Per advertiser (flagged first)")
    for column in (
        "advertiser",
        "answers",
        "fixes",
        "fix rate",
        "recent answers",
        "recent rate",
        "baseline rate",
        "verdict",
    ):
        advertisers.add_column(
            column, justify="left" if column in ("advertiser", "verdict") else "right"
        )
    for a in result.advertisers[:limit]:
        name = f"[bold red]▲ {a.advertiser_id}[/bold red]" if a.jumped else a.advertiser_id
        advertisers.add_row(
            name,
            str(a.total.classified),
            str(a.total.fixes),
            _pct(a.total.rate),
            str(a.recent.classified),
            _pct(a.recent.rate),
            _pct(a.baseline.rate)
            if a.baseline_source == "own"
            else f"{_pct(result.fleet_baseline.rate)} (all)",
            a.verdict,
        )
    out.print(advertisers)
    if len(result.advertisers) > limit:
        out.print(f"… {len(result.advertisers) - limit} more advertisers (raise --limit)")
    out.print(f"Flagged: {result.thresholds.explain()}.")
    _print_drift(out, drift)


def _drift_rows(report: DriftReport, limit: int) -> list[dict[str, Any]]:
    """Each model version's drift, overall then per advertiser (most drifted first); at
    most ``limit`` advertiser rows in all (every version's overall row is kept)."""
    rows = []
    shown = 0
    for version in report.versions:
        advertisers = version.advertisers[: max(limit - shown, 0)]
        shown += len(advertisers)
        for scope in [version.overall, *advertisers]:
            rows.append(
                {
                    "version": version.version,
                    "advertiser_id": scope.advertiser_id,
                    "state": scope.state,
                    "images": scope.current.images,
                    "far_share": scope.current.far_share,
                    "far_share_baseline": scope.baseline.far_share,
                    "mean_novelty": scope.current.mean_novelty,
                    "confidence_delta": scope.confidence_delta,
                    "type_tvd": scope.type_tvd,
                    "color_tvd": scope.color_tvd,
                    "reasons": list(scope.reasons),
                    "baseline": f"{version.baseline_start} → {version.baseline_end}",
                }
            )
    return rows


def _print_drift(out: Console, rows: list[dict[str, Any]]) -> None:
    """The drift table: today's images against each version's first week."""

    def num(value: float | None, fmt: str = "{:.3f}") -> str:
        return "—" if value is None else fmt.format(value)

    table = Table(title="Drift (the current window against each version's first week)")
    for column in ("model version", "advertiser", "state", "images", "far share", "novelty"):
        table.add_column(
            column,
            justify="left" if column in ("model version", "advertiser", "state") else "right",
        )
    for column in ("confidence Δ", "type mix", "color mix", "why"):
        table.add_column(column, justify="left" if column == "why" else "right")
    for row in rows:
        state = f"[bold red]{row['state']}[/bold red]" if row["state"] == "drift" else row["state"]
        table.add_row(
            row["version"],
            row["advertiser_id"] or "(all)",
            state,
            str(row["images"]),
            f"{num(row['far_share'], '{:.1%}')} ({num(row['far_share_baseline'], '{:.1%}')})",
            num(row["mean_novelty"]),
            num(row["confidence_delta"], "{:+.3f}"),
            num(row["type_tvd"]),
            num(row["color_tvd"]),
            "; ".join(row["reasons"]),
        )
    out.print(table if rows else "Drift: no model version answered in the current window.")
