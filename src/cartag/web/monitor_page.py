"""Render a :class:`~cartag.deploy.monitor.MonitorReport` as the ``/monitor`` HTML page.

Server-rendered: the charts are inline SVG from :mod:`cartag.web.svg`, no scripts.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Final

import jinja2
from markupsafe import Markup

from cartag.deploy.drift import DriftReport
from cartag.deploy.monitor import NO_COLOR, AdvertiserStats, MonitorReport, Rate
from cartag.deploy.operations import OpsReport
from cartag.telemetry.snapshot import Snapshot
from cartag.vocab import COLORS, IMAGE_TYPES
from cartag.web import environment as web_environment
from cartag.web import svg
from cartag.web.ops_panels import CHART_WIDTH, build_panels, seconds

TYPE_COLORS: Final[dict[str, str]] = {
    "Dealer": "#0d6efd",
    "Stock": "#20c997",
    "Placeholder": "#adb5bd",
}
# Swatches close to the vehicle colors they stand for.
COLOR_SWATCHES: Final[dict[str, str]] = {
    "Black": "#212529",
    "Blue": "#1f5fbf",
    "Brown": "#7b4a26",
    "Burgundy": "#800020",
    "Green": "#2e8b57",
    "Grey": "#9aa0a6",
    "Orange": "#f28c28",
    "Pink": "#f4a6c0",
    "Purple": "#7d3c98",
    "Red": "#d62728",
    "White": "#f8f9fa",
    "Yellow": "#f2d21b",
    NO_COLOR: "#e9ecef",
}
# Advertisers drawn in the per-advertiser fix-rate chart (flagged ones first).
MAX_ADVERTISER_LINES: Final = 8
# Rows of the advertiser table (flagged first); the rest are counted, and reachable with
# the advertiser filter or `cartag monitor report --limit`.
MAX_ADVERTISER_ROWS: Final = 200
# Advertisers listed per model version in the drift panel (most drifted first).
MAX_DRIFT_ROWS: Final = 20


@dataclass
class VersionCharts:
    version: str
    answers: int
    fixes: int
    types_svg: Markup
    colors_svg: Markup


def _pct(rate: float | None) -> str:
    return "—" if rate is None else f"{rate * 100:.2f}%"


def _num(value: float | None) -> str:
    return "—" if value is None else f"{value:.3f}"


def _signed(value: float | None) -> str:
    return "—" if value is None else f"{value:+.3f}"


def _day_label(day: dt.date) -> str:
    return day.strftime("%m-%d")


def _version_charts(report: MonitorReport) -> list[VersionCharts]:
    charts = []
    for version in report.versions:
        type_cols: list[tuple[str, dict[str, float]]] = []
        color_cols: list[tuple[str, dict[str, float]]] = []
        answers = fixes = 0
        for day in report.days:
            cell = report.cell(version, day)
            types = {k: float(v) for k, v in cell.types.items()} if cell else {}
            colors = {k: float(v) for k, v in cell.colors.items()} if cell else {}
            type_cols.append((_day_label(day), types))
            color_cols.append((_day_label(day), colors))
            if cell:
                answers += cell.rate.classified
                fixes += cell.rate.fixes
        charts.append(
            VersionCharts(
                version=version,
                answers=answers,
                fixes=fixes,
                types_svg=Markup(
                    svg.stacked_bars(
                        type_cols, IMAGE_TYPES, TYPE_COLORS, title=f"type mix of {version} per day"
                    )
                ),
                colors_svg=Markup(
                    svg.stacked_bars(
                        color_cols,
                        (*COLORS, NO_COLOR),
                        COLOR_SWATCHES,
                        title=f"color mix of {version} per day",
                    )
                ),
            )
        )
    return charts


def _daily_rates(report: MonitorReport, daily: dict[dt.date, Rate]) -> list[float | None]:
    return [daily[d].rate if d in daily else None for d in report.days]


def _version_rate_chart(report: MonitorReport) -> Markup:
    series: dict[str, list[float | None]] = {}
    for version in report.versions:
        values: list[float | None] = []
        for day in report.days:
            cell = report.cell(version, day)
            values.append(cell.rate.rate if cell else None)
        series[version] = values
    return Markup(
        svg.line_chart(
            [_day_label(d) for d in report.days],
            series,
            title="manual-fix rate (fixes ÷ answered images) per model version and day",
            plot_width=CHART_WIDTH,
        )
    )


def _advertiser_rate_chart(report: MonitorReport) -> Markup:
    chosen: list[AdvertiserStats] = report.jumped[:MAX_ADVERTISER_LINES]
    rest = sorted(
        (a for a in report.advertisers if not a.jumped),
        key=lambda a: -a.total.classified,
    )
    chosen += rest[: MAX_ADVERTISER_LINES - len(chosen)]
    series = {a.advertiser_id: _daily_rates(report, a.daily) for a in chosen}
    return Markup(
        svg.line_chart(
            [_day_label(d) for d in report.days],
            series,
            title="manual-fix rate per advertiser and day (flagged advertisers drawn thick)",
            highlight=[a.advertiser_id for a in report.jumped],
        )
    )


def _environment() -> jinja2.Environment:
    env = web_environment()
    env.filters["pct"] = _pct
    env.filters["num"] = _num
    env.filters["signed"] = _signed
    env.filters["seconds"] = seconds
    return env


def render_monitor(
    report: MonitorReport,
    *,
    since_text: str,
    generated: dt.datetime,
    max_rows: int = MAX_ADVERTISER_ROWS,
    csrf: str = "",
    ops: OpsReport | None = None,
    snapshot: Snapshot | None = None,
    drift: DriftReport | None = None,
) -> str:
    """The monitor page for ``report``.

    Args:
        report: What to show.
        ops: The store's operational figures of the window (default: none shown).
        snapshot: The serving process's metrics (latency, errors, skips); None: not shown.
        since_text: The ``since`` the user asked for (kept in links and the form).
        generated: When the page was made (shown in the header).
        max_rows: Most advertisers listed in the table.
        csrf: The logout form's CSRF token (see :mod:`cartag.api.browser`).
        drift: The drift of the model versions answering now (None: no drift panel).
    """
    rows = report.advertisers[:max_rows]
    sparklines = {
        a.advertiser_id: Markup(
            svg.sparkline(
                _daily_rates(report, a.daily),
                color="#dc3545" if a.jumped else "#0d6efd",
                title=f"daily fix rate of {a.advertiser_id}",
            )
        )
        for a in rows
    }
    return (
        _environment()
        .get_template("monitor.html")
        .render(
            report=report,
            since_text=since_text,
            advertiser_text=report.advertiser or "",
            filter_error=None,
            error_field=None,
            generated=generated.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
            version_charts=_version_charts(report),
            version_rate_svg=_version_rate_chart(report),
            advertiser_rate_svg=_advertiser_rate_chart(report) if report.advertisers else None,
            sparklines=sparklines,
            rows=rows,
            hidden=len(report.advertisers) - len(rows),
            rule=report.thresholds.explain(),
            csrf=csrf,
            panels=build_panels(report, ops, snapshot) if ops is not None else None,
            drift=drift,
            max_drift_rows=MAX_DRIFT_ROWS,
        )
    )


def render_invalid_filter(
    *, error: str, field: str | None, since_text: str, advertiser_text: str, csrf: str = ""
) -> str:
    """The page for a filter it cannot show: the form as typed, the reason beside it.

    Args:
        error: What is wrong and how to write it instead.
        field: The form's field at fault (``since`` or ``advertiser``), marked invalid.
        since_text: The ``since`` as the user typed it.
        advertiser_text: The ``advertiser`` as the user typed it.
        csrf: The logout form's CSRF token (see :mod:`cartag.api.browser`).
    """
    return (
        _environment()
        .get_template("monitor_invalid.html")
        .render(
            since_text=since_text,
            advertiser_text=advertiser_text,
            filter_error=error,
            error_field=field,
            csrf=csrf,
        )
    )


def render_login(*, error: str | None = None, next_url: str = "/monitor", csrf: str = "") -> str:
    """The login form: an API key with the reviewer (or admin) role.

    ``csrf`` is the form's CSRF token (see :mod:`cartag.api.browser`).
    """
    return (
        _environment()
        .get_template("monitor_login.html")
        .render(error=error, next=next_url, csrf=csrf)
    )
