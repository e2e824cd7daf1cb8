"""A tiny SVG plotting helper for server-rendered pages: stacked bars, lines, sparklines.

Each function returns one self-contained ``<svg>`` element as a string (every text is
XML-escaped), to be inlined in HTML. No scripts: hovering shows ``<title>`` tooltips.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from html import escape
from typing import Final

FONT: Final = 'font-family="system-ui, sans-serif" font-size="11"'
SERIES_COLORS: Final = (
    "#0d6efd",
    "#d63384",
    "#198754",
    "#fd7e14",
    "#6f42c1",
    "#20c997",
    "#dc3545",
    "#6c757d",
)
MISSING_COLOR: Final = "#dee2e6"


def _fmt(value: float) -> str:
    return f"{value:.1f}".rstrip("0").rstrip(".")


def percent(value: float) -> str:
    return f"{value * 100:.1f}%"


def series_color(index: int) -> str:
    return SERIES_COLORS[index % len(SERIES_COLORS)]


def _legend(x: float, y: float, items: Sequence[tuple[str, str]]) -> list[str]:
    parts = []
    for i, (name, color) in enumerate(items):
        top = y + i * 16
        parts.append(
            f'<rect x="{_fmt(x)}" y="{_fmt(top)}" width="10" height="10" fill="{color}" '
            f'stroke="#adb5bd" stroke-width="0.5"/>'
            f'<text x="{_fmt(x + 14)}" y="{_fmt(top + 9)}" {FONT}>{escape(name)}</text>'
        )
    return parts


def _open(width: float, height: float, title: str) -> str:
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{_fmt(width)}" height="{_fmt(height)}" '
        f'viewBox="0 0 {_fmt(width)} {_fmt(height)}" role="img" aria-label="{escape(title)}">'
        f"<title>{escape(title)}</title>"
    )


def stacked_bars(
    columns: Sequence[tuple[str, Mapping[str, float]]],
    categories: Sequence[str],
    colors: Mapping[str, str],
    *,
    title: str,
    height: int = 240,
    bar_width: int = 18,
) -> str:
    """Bars of 100% height, one per column, split by each category's share.

    Args:
        columns: ``(label, {category: count})`` per bar, left to right; labels are
            drawn under the bars, rotated.
        categories: Stacking order, bottom first; categories of a column not listed
            here are ignored.
        colors: Fill per category (default: grey).
        title: Accessible title, shown as tooltip of the whole chart.
        height: Plot height in pixels (labels and legend come on top of it).
        bar_width: Width of one bar.

    Returns:
        An ``<svg>`` element. A column with no counts is drawn as an empty outline.
    """
    left, top, gap, label_space = 36, 8, 4, 96
    plot_w = max(len(columns), 1) * (bar_width + gap)
    legend_x = left + plot_w + 16
    width = legend_x + 110
    total_h = top + height + label_space
    parts = [_open(width, max(total_h, top + 16 * len(categories)), title)]
    for tick in (0.0, 0.25, 0.5, 0.75, 1.0):
        y = top + height * (1 - tick)
        parts.append(
            f'<line x1="{left}" x2="{_fmt(left + plot_w)}" y1="{_fmt(y)}" y2="{_fmt(y)}" '
            f'stroke="#e9ecef"/><text x="{left - 4}" y="{_fmt(y + 4)}" text-anchor="end" '
            f"{FONT}>{int(tick * 100)}%</text>"
        )
    for i, (label, counts) in enumerate(columns):
        x = left + i * (bar_width + gap) + gap / 2
        total = sum(counts.get(c, 0) for c in categories)
        if total <= 0:
            parts.append(
                f'<rect x="{_fmt(x)}" y="{top}" width="{bar_width}" height="{height}" '
                f'fill="none" stroke="#ced4da" stroke-dasharray="2,2"/>'
            )
        else:
            y = float(top + height)
            for category in categories:
                value = counts.get(category, 0)
                if value <= 0:
                    continue
                h = height * value / total
                y -= h
                tip = f"{label} · {category}: {_fmt(value)} ({percent(value / total)})"
                parts.append(
                    f'<rect x="{_fmt(x)}" y="{_fmt(y)}" width="{bar_width}" height="{_fmt(h)}" '
                    f'fill="{colors.get(category, MISSING_COLOR)}" stroke="#fff" '
                    f'stroke-width="0.5"><title>{escape(tip)}</title></rect>'
                )
        lx, ly = x + bar_width / 2, top + height + 8
        parts.append(
            f'<text x="{_fmt(lx)}" y="{_fmt(ly)}" transform="rotate(60 {_fmt(lx)} {_fmt(ly)})" '
            f"{FONT}>{escape(label)}</text>"
        )
    legend = [(c, colors.get(c, MISSING_COLOR)) for c in reversed(categories)]
    parts.extend(_legend(legend_x, top, legend))
    parts.append("</svg>")
    return "".join(parts)


def line_chart(
    x_labels: Sequence[str],
    series: Mapping[str, Sequence[float | None]],
    *,
    title: str,
    height: int = 220,
    step: int = 36,
    y_format: Callable[[float], str] = percent,
    highlight: Sequence[str] = (),
    plot_width: int | None = None,
) -> str:
    """One line per series over shared x positions; ``None`` values break the line.

    Args:
        x_labels: Label of each x position.
        series: Values per series, one per x label (``None`` = no data).
        title: Accessible title.
        height: Plot height in pixels.
        step: Horizontal distance between x positions.
        y_format: Formats axis ticks and tooltips (default: percent).
        highlight: Series drawn thicker, on top of the others (e.g. flagged ones).
        plot_width: Spread the x positions over this width instead of ``step`` apart
            (never closer than 8 pixels).

    Returns:
        An ``<svg>`` element; the y axis starts at 0 and ends at the largest value.
    """
    left, top, label_space = 52, 8, 80
    if plot_width is not None:
        step = max(8, plot_width // max(len(x_labels) - 1, 1))
    plot_w = max(len(x_labels) - 1, 1) * step
    values = [v for vs in series.values() for v in vs if v is not None]
    y_max = max(values, default=0.0)
    y_max = y_max * 1.1 if y_max > 0 else 1.0
    legend_x = left + plot_w + 24
    width = legend_x + 160
    total_h = max(top + height + label_space, top + 16 * len(series) + 8)
    parts = [_open(width, total_h, title)]

    def ypos(v: float) -> float:
        return top + height * (1 - v / y_max)

    for i in range(5):
        tick = y_max * i / 4
        y = ypos(tick)
        parts.append(
            f'<line x1="{left}" x2="{_fmt(left + plot_w)}" y1="{_fmt(y)}" y2="{_fmt(y)}" '
            f'stroke="#e9ecef"/><text x="{left - 4}" y="{_fmt(y + 4)}" text-anchor="end" '
            f"{FONT}>{escape(y_format(tick))}</text>"
        )
    for i, label in enumerate(x_labels):
        lx, ly = left + i * step, top + height + 8
        parts.append(
            f'<text x="{_fmt(lx)}" y="{_fmt(ly)}" transform="rotate(60 {_fmt(lx)} {_fmt(ly)})" '
            f"{FONT}>{escape(label)}</text>"
        )
    names = sorted(series, key=lambda n: n in highlight)  # highlighted ones on top
    colors = {name: series_color(i) for i, name in enumerate(series)}
    for name in names:
        color, strong = colors[name], name in highlight
        segment: list[str] = []
        runs: list[list[str]] = [segment]
        for i, value in enumerate(series[name]):
            if value is None or math.isnan(value):
                segment = []
                runs.append(segment)
                continue
            x, y = left + i * step, ypos(value)
            segment.append(f"{_fmt(x)},{_fmt(y)}")
            tip = f"{name} · {x_labels[i]}: {y_format(value)}"
            parts.append(
                f'<circle cx="{_fmt(x)}" cy="{_fmt(y)}" r="{3 if strong else 2.5}" '
                f'fill="{color}"><title>{escape(tip)}</title></circle>'
            )
        for run in runs:
            if len(run) > 1:
                parts.append(
                    f'<polyline points="{" ".join(run)}" fill="none" stroke="{color}" '
                    f'stroke-width="{3 if strong else 1.5}"/>'
                )
    parts.extend(_legend(legend_x, top, [(n, colors[n]) for n in series]))
    parts.append("</svg>")
    return "".join(parts)


def sparkline(
    values: Sequence[float | None],
    *,
    width: int = 120,
    height: int = 24,
    color: str = "#0d6efd",
    title: str = "",
) -> str:
    """A small axis-less line (0 at the bottom, the largest value at the top)."""
    parts = [_open(width, height, title)]
    present = [v for v in values if v is not None]
    top = max(present, default=0.0) or 1.0
    step = width / max(len(values) - 1, 1)
    points = []
    for i, value in enumerate(values):
        if value is None:
            continue
        y = height - 2 - (height - 4) * value / top
        points.append(f"{_fmt(i * step)},{_fmt(y)}")
    if len(points) == 1:
        cx, cy = points[0].split(",")
        parts.append(f'<circle cx="{cx}" cy="{cy}" r="2" fill="{color}"/>')
    elif points:
        parts.append(
            f'<polyline points="{" ".join(points)}" fill="none" stroke="{color}" '
            f'stroke-width="1.5"/>'
        )
    parts.append("</svg>")
    return "".join(parts)


def hbars(
    items: Sequence[tuple[str, float]],
    *,
    title: str,
    width: int = 420,
    bar_height: int = 16,
    color: str = "#0d6efd",
    value_format: Callable[[float], str] = _fmt,
) -> str:
    """Horizontal bars, one per ``(label, value)``, longest = the largest value.

    Args:
        items: Labels and values, drawn top to bottom in this order.
        title: Accessible title.
        width: Total width (labels take the left third).
        bar_height: Height of a bar.
        color: Bar fill.
        value_format: Formats the value written after each bar.

    Returns:
        An ``<svg>`` element (a line of text when there are no items).
    """
    label_w, gap, value_w = width // 3, 6, 70
    plot_w = max(width - label_w - value_w - gap, 10)
    height = max(len(items), 1) * (bar_height + gap) + gap
    parts = [_open(width, height, title)]
    top = max((v for _, v in items), default=0.0) or 1.0
    if not items:
        parts.append(f'<text x="0" y="{bar_height}" {FONT}>none</text>')
    for i, (label, value) in enumerate(items):
        y = gap + i * (bar_height + gap)
        w = plot_w * max(value, 0.0) / top
        tip = f"{label}: {value_format(value)}"
        parts.append(
            f'<text x="{label_w - 4}" y="{_fmt(y + bar_height - 4)}" text-anchor="end" '
            f"{FONT}>{escape(label)}</text>"
            f'<rect x="{label_w}" y="{y}" width="{_fmt(max(w, 1.0))}" height="{bar_height}" '
            f'fill="{color}"><title>{escape(tip)}</title></rect>'
            f'<text x="{_fmt(label_w + w + 4)}" y="{_fmt(y + bar_height - 4)}" '
            f"{FONT}>{escape(value_format(value))}</text>"
        )
    parts.append("</svg>")
    return "".join(parts)
