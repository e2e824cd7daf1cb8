"""The operational panels of /monitor: latency, errors, skip reasons, cache, jobs, versions.

Two sources, each panel saying which: the store (every process, the report's window:
:mod:`cartag.deploy.operations`) and the serving process's own metrics since it started
(:mod:`cartag.telemetry.snapshot`; ``None`` when the app keeps none). Charts are inline
SVG (:mod:`cartag.web.svg`).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Final

from markupsafe import Markup

from cartag.deploy.monitor import MonitorReport
from cartag.deploy.operations import OpsReport, VersionOps
from cartag.telemetry.snapshot import RouteStats, Snapshot
from cartag.web import svg

# Routes listed in the latency table (busiest first); the rest are summed in a last row.
MAX_ROUTES: Final = 12
MAX_REASONS: Final = 12
# Plot width of the panels' line charts (a panel is at least 440 px wide).
CHART_WIDTH: Final = 420


def seconds(value: float | None) -> str:
    """A duration for people: 3.2 ms, 250 ms, 1.5 s, 4 min, 2.0 h."""
    if value is None:
        return "—"
    if value < 1:
        return f"{value * 1000:.3g} ms"
    if value < 120:
        return f"{value:.3g} s"
    if value < 7200:
        return f"{value / 60:.0f} min"
    return f"{value / 3600:.1f} h"


def _count(value: float) -> str:
    return f"{value:,.0f}"


@dataclass
class VersionRow:
    """A row of the per-version table: the store's window and this process's answers."""

    ops: VersionOps
    serving: bool
    process_answers: int
    process_cached: int


@dataclass
class OpsPanels:
    """Everything the operational panels show, ready for the template."""

    snapshot: Snapshot | None
    ops: OpsReport
    versions: list[VersionRow]
    routes: list[RouteStats]
    other_routes: RouteStats | None
    cache_svg: Markup
    skip_svg: Markup | None
    download_svg: Markup | None
    batches: dict[str, str] = field(default_factory=dict)
    summary: dict[str, str] = field(default_factory=dict)


def _other(routes: list[RouteStats]) -> RouteStats | None:
    if not routes:
        return None
    return RouteStats(
        route=f"{len(routes)} other routes",
        method="",
        requests=sum(r.requests for r in routes),
        client_errors=sum(r.client_errors for r in routes),
        server_errors=sum(r.server_errors for r in routes),
        mean_s=None,
        p50_s=None,
        p95_s=None,
        p99_s=None,
    )


def _versions(ops: OpsReport, snapshot: Snapshot | None) -> list[VersionRow]:
    process = snapshot.model_answers if snapshot else {}
    names = [v.version for v in ops.versions] + [
        n for n in process if n not in {v.version for v in ops.versions}
    ]
    by_name = {v.version: v for v in ops.versions}
    rows = []
    for name in names:
        counts = process.get(name, {})
        rows.append(
            VersionRow(
                ops=by_name.get(name, VersionOps(name)),
                serving=snapshot is not None and snapshot.serving == name,
                process_answers=sum(counts.values()),
                process_cached=counts.get("cached", 0),
            )
        )
    return rows


def _day(day: dt.date) -> str:
    return day.strftime("%m-%d")


def build_panels(report: MonitorReport, ops: OpsReport, snapshot: Snapshot | None) -> OpsPanels:
    """The panels' figures and charts for one report window."""
    routes = snapshot.routes if snapshot else []
    skip_svg = download_svg = None
    if snapshot is not None:
        reasons = list(snapshot.skipped.items())[:MAX_REASONS]
        skip_svg = Markup(
            svg.hbars(
                [(r, float(n)) for r, n in reasons],
                title="skipped images by reason (this process)",
                color="#dc3545",
                value_format=_count,
            )
        )
        failures = sorted(snapshot.download_failures.items(), key=lambda kv: -kv[1])
        download_svg = Markup(
            svg.hbars(
                [(r, float(n)) for r, n in failures[:MAX_REASONS]],
                title="failed downloads by reason (this process)",
                color="#fd7e14",
                value_format=_count,
            )
        )
    cache_svg = Markup(
        svg.line_chart(
            [_day(d) for d in report.days],
            {"cache hit rate": [ops.cache_rate(d) for d in report.days]},
            title="cache hit rate per day (cached ÷ answered images, every process)",
        )
    )
    answered = sum(v.answers for v in ops.versions)
    cached = sum(v.cached for v in ops.versions)
    summary = {
        "cache hit rate": svg.percent(cached / answered) if answered else "—",
        "jobs waiting": _count(ops.jobs.queued),
    }
    if snapshot is not None:
        summary["requests"] = _count(snapshot.requests)
        summary["server errors (5xx)"] = _count(snapshot.server_errors)
        rate = snapshot.skip_rate
        summary["skipped images"] = svg.percent(rate) if rate is not None else "—"
    batches: dict[str, str] = {}
    if snapshot is not None and snapshot.batches:
        batches = {
            "model calls": _count(snapshot.batches),
            "images per call": f"{snapshot.batch_images / snapshot.batches:.1f}",
            "time per call": seconds(snapshot.batch_seconds / snapshot.batches),
        }
    return OpsPanels(
        snapshot=snapshot,
        ops=ops,
        versions=_versions(ops, snapshot),
        routes=routes[:MAX_ROUTES],
        other_routes=_other(routes[MAX_ROUTES:]),
        cache_svg=cache_svg,
        skip_svg=skip_svg,
        download_svg=download_svg,
        batches=batches,
        summary=summary,
    )
