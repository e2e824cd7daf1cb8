"""The SVG plotting helper: well-formed XML, proportional bars, escaped text."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import pytest

from cartag.web import svg

NS = "{http://www.w3.org/2000/svg}"


def _parse(text: str) -> ET.Element:
    return ET.fromstring(text)


def test_stacked_bars_are_proportional_and_escaped() -> None:
    columns = [("day <1>", {"A": 3.0, "B": 1.0}), ("day 2", {}), ("day 3", {"B": 2.0})]
    root = _parse(
        svg.stacked_bars(columns, ["A", "B"], {"A": "#111111", "B": "#222222"}, title="mix & co")
    )
    assert root.find(f"{NS}title").text == "mix & co"  # type: ignore[union-attr]
    bars = [r for r in root.iter(f"{NS}rect") if r.find(f"{NS}title") is not None]
    heights = {r.find(f"{NS}title").text: float(r.get("height", 0)) for r in bars}  # type: ignore[union-attr]
    a = heights["day <1> · A: 3 (75.0%)"]
    b = heights["day <1> · B: 1 (25.0%)"]
    assert a == pytest.approx(3 * b)
    assert heights["day 3 · B: 2 (100.0%)"] == pytest.approx(a + b)
    # The empty day is an outline, not a bar.
    outlines = [r for r in root.iter(f"{NS}rect") if r.get("stroke-dasharray")]
    assert len(outlines) == 1
    texts = [t.text for t in root.iter(f"{NS}text")]
    assert "day <1>" in texts and "A" in texts and "B" in texts


def test_line_chart_breaks_on_missing_values() -> None:
    root = _parse(
        svg.line_chart(
            ["d1", "d2", "d3", "d4", "d5"],
            {"m1": [0.1, 0.2, None, 0.3, 0.4], "m2": [None, None, None, None, 0.05]},
            title="rates",
            highlight=["m2"],
        )
    )
    lines = list(root.iter(f"{NS}polyline"))
    assert len(lines) == 2  # m1: two runs of two points; m2: a single point, no line
    assert all(len(line.get("points", "").split()) == 2 for line in lines)
    dots = list(root.iter(f"{NS}circle"))
    assert len(dots) == 5
    tips = {d.find(f"{NS}title").text for d in dots}  # type: ignore[union-attr]
    assert "m1 · d4: 30.0%" in tips and "m2 · d5: 5.0%" in tips
    thick = [d for d in dots if d.get("r") == "3"]
    assert len(thick) == 1  # the highlighted series


def test_sparkline_handles_empty_and_single_values() -> None:
    assert _parse(svg.sparkline([]))
    single = _parse(svg.sparkline([None, 0.2, None]))
    assert len(list(single.iter(f"{NS}circle"))) == 1
    many = _parse(svg.sparkline([0.0, 0.5, 1.0]))
    points = many.find(f"{NS}polyline").get("points", "").split()  # type: ignore[union-attr]
    ys = [float(p.split(",")[1]) for p in points]
    assert ys[0] > ys[1] > ys[2]  # higher values are drawn higher (smaller y)
