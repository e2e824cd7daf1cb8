"""The HTML report of a sweep's leaderboard, written to ``<data_dir>/reports/<study>.html``.

Self-contained: inline SVG bar charts of per-class recall, confusion matrices as PNG
data URIs. What it shows is computed by :mod:`cartag.training.sweep.leaderboard`.
"""

from __future__ import annotations

import base64
import datetime as dt
from html import escape
from pathlib import Path
from typing import Any, Final

from markupsafe import Markup

from cartag.settings import Settings
from cartag.training.sweep.leaderboard import (
    Leaderboard,
    recall_deltas,
    short_set_name,
    summary,
)
from cartag.training.sweep.study import folder_name
from cartag.web import environment as web_environment
from cartag.web.report import TASK_TITLES, confusion_png

TEMPLATE_NAME: Final[str] = "leaderboard.html"
# Bar colours: production first (grey), then candidates.
_PALETTE: Final[tuple[str, ...]] = (
    "#868e96",
    "#1c7ed6",
    "#f76707",
    "#37b24d",
    "#ae3ec9",
    "#f59f00",
    "#0ca678",
    "#e03131",
    "#5c7cfa",
)


def recall_chart_svg(lb: Leaderboard, set_name: str, task: str) -> str:
    """Grouped bars of per-class recall: production then each candidate, per class.

    Returns:
        An ``<svg>`` element (empty string when no model has this task on this set).
    """
    entries = [e for e in lb.entries if task in e.metrics.get(set_name, {})]
    if not entries:
        return ""
    labels = sorted({c for e in entries for c in e.metrics[set_name][task]["per_class"]})
    bar, gap, height, left, top, bottom = 9, 14, 160, 40, 10, 60
    group = bar * len(entries)
    width = left + len(labels) * (group + gap) + gap
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height + top + bottom}"'
        f' role="img" aria-label="per-class recall, {escape(task)}">'
    ]
    for tick in (0.0, 0.25, 0.5, 0.75, 1.0):
        y = top + height * (1 - tick)
        parts.append(
            f'<line x1="{left}" x2="{width}" y1="{y:.1f}" y2="{y:.1f}" stroke="#dee2e6"/>'
            f'<text x="{left - 4}" y="{y + 4:.1f}" font-size="10" text-anchor="end">'
            f"{tick:.2f}</text>"
        )
    for i, label in enumerate(labels):
        x0 = left + gap + i * (group + gap)
        for j, entry in enumerate(entries):
            row = entry.metrics[set_name][task]["per_class"].get(label)
            recall = None if row is None else row.get("recall")
            if recall is None:
                continue
            h = height * float(recall)
            colour = _PALETTE[j % len(_PALETTE)]
            parts.append(
                f'<rect x="{x0 + j * bar}" y="{top + height - h:.1f}" width="{bar - 1}" '
                f'height="{h:.1f}" fill="{colour}"><title>{escape(entry.label)} · '
                f"{escape(label)}: recall {float(recall):.3f} (n={row.get('support')})"
                "</title></rect>"
            )
        cx = x0 + group / 2
        parts.append(
            f'<text x="{cx:.1f}" y="{top + height + 12}" font-size="10" text-anchor="end" '
            f'transform="rotate(-40 {cx:.1f} {top + height + 12})">{escape(label)}</text>'
        )
    parts.append("</svg>")
    return "".join(parts)


def _confusion_uri(task_metrics: dict[str, Any]) -> str:
    png = confusion_png(task_metrics["labels"], task_metrics["confusion"])
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def render_html(lb: Leaderboard, *, now: dt.datetime) -> str:
    """The leaderboard as one self-contained HTML page."""
    env = web_environment()
    legend = [
        {"label": e.label, "colour": _PALETTE[i % len(_PALETTE)]} for i, e in enumerate(lb.entries)
    ]
    sets = []
    for set_name in lb.sets:
        tasks = []
        for task in ("image_type", "color"):
            chart = recall_chart_svg(lb, set_name, task)
            if not chart:
                continue
            rows = []
            for entry in lb.entries:
                m = entry.metrics.get(set_name, {}).get(task)
                if m is None:
                    continue
                rows.append(
                    {
                        "entry": entry,
                        "m": m,
                        "deltas": recall_deltas(entry, lb.production, set_name, task),
                        "confusion_uri": _confusion_uri(m) if m.get("labels") else None,
                    }
                )
            tasks.append(
                {"title": TASK_TITLES.get(task, task), "chart": Markup(chart), "rows": rows}
            )
        sets.append({"name": set_name, "tasks": tasks})
    return env.get_template(TEMPLATE_NAME).render(
        lb=lb,
        created=now.isoformat(timespec="seconds"),
        legend=legend,
        summary=summary(lb),
        sets=sets,
        short=lambda s: short_set_name(lb, s),
    )


def report_path(settings: Settings, study: str) -> Path:
    """``<data_dir>/reports/<study>.html``."""
    return settings.data_dir / "reports" / f"{folder_name(study)}.html"


def write_leaderboard(lb: Leaderboard, settings: Settings, *, now: dt.datetime) -> Path:
    """Write the HTML report; returns its path."""
    out = report_path(settings, lb.study)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(render_html(lb, now=now), encoding="utf-8")
    return out
