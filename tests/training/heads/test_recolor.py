"""Recoloring car bodies into the colors vcr-train lacks."""

from __future__ import annotations

import colorsys

import numpy as np
import pytest
from PIL import Image

from cartag.training.heads.recolor import (
    SOURCES,
    TARGETS,
    body_weight,
    missing_targets,
    recolor,
    synthesize,
)

SIDE = 48
RED, GREY, BLACK, WHITE = (200, 20, 25), (120, 120, 120), (10, 10, 10), (250, 250, 250)


def _car(body: tuple[int, int, int] = RED) -> Image.Image:
    """A body-colored box with a black tyre and a white highlight, on grey."""
    pixels = np.full((SIDE, SIDE, 3), GREY, dtype=np.uint8)
    pixels[12:36, 6:42] = body
    pixels[30:36, 10:18] = BLACK
    pixels[14:16, 20:30] = WHITE
    return Image.fromarray(pixels)


def _hue(rgb: np.ndarray) -> float:
    h, _, _ = colorsys.rgb_to_hsv(*(rgb.astype(float) / 255))
    return h * 360


@pytest.mark.parametrize(("target", "low", "high"), [("Orange", 12, 40), ("Purple", 255, 300)])
def test_recolor_paints_the_body_and_keeps_the_rest(target: str, low: float, high: float) -> None:
    out = recolor(_car(), "Red", target, np.random.default_rng(0))
    assert out is not None and out.mode == "RGB" and out.size == (SIDE, SIDE)
    pixels, before = np.asarray(out), np.asarray(_car())
    assert low <= _hue(pixels[24, 36]) <= high
    for y, x in ((2, 2), (32, 12), (15, 25)):  # background, tyre, highlight
        np.testing.assert_array_equal(pixels[y, x], before[y, x])


def test_burgundy_is_a_darker_red() -> None:
    out = recolor(_car(), "Red", "Burgundy", np.random.default_rng(0))
    assert out is not None
    body = np.asarray(out)[24, 36]
    assert _hue(body) >= 330 and body.max() < 0.7 * max(RED)


def test_recolor_is_deterministic_for_a_seed() -> None:
    a = recolor(_car(), "Red", "Orange", np.random.default_rng(4))
    b = recolor(_car(), "Red", "Orange", np.random.default_rng(4))
    assert a is not None and b is not None
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_no_body_of_the_source_color_gives_none() -> None:
    assert recolor(_car(body=(20, 40, 200)), "Red", "Orange", np.random.default_rng(0)) is None
    with pytest.raises(KeyError):
        recolor(_car(), "Green", "Orange", np.random.default_rng(0))


def test_body_weight_skips_grey_white_and_black() -> None:
    hsv = np.asarray(_car().convert("HSV"), dtype=np.float32) / 255
    weight = body_weight(hsv, SOURCES["Red"])
    assert weight.shape == (SIDE, SIDE) and weight.dtype == np.float32
    assert weight[24, 36] == 1.0
    assert weight[2, 2] == 0.0 and weight[32, 12] == 0.0 and weight[15, 25] == 0.0


def test_synthesize_makes_each_target_from_its_sources() -> None:
    photos = [
        ("Red", RED),
        ("Red", (180, 30, 40)),
        ("Blue", (20, 40, 200)),
        ("Green", (20, 160, 40)),
    ]
    colors = [color for color, _ in photos]
    loaded: list[int] = []

    def load(i: int) -> Image.Image:
        loaded.append(i)
        return _car(photos[i][1])

    made = synthesize(colors, load, per_color=2, seed=0)
    by_color = {c: [r for r in made if r.color == c] for c in TARGETS}
    assert len(by_color["Orange"]) == 2 and len(by_color["Burgundy"]) == 2
    assert {r.source for r in by_color["Orange"]} == {0, 1}
    # Purple comes from blue, red and pink cars: three photos here qualify, two are taken.
    assert len(by_color["Purple"]) == 2
    assert 3 not in loaded and all(r.source != 3 for r in made)  # green is no source
    again = synthesize(colors, load, per_color=2, seed=0)
    assert [(r.color, r.source) for r in again] == [(r.color, r.source) for r in made]
    assert synthesize(colors, load, per_color=0, seed=0) == []
    only = synthesize(colors, load, per_color=2, seed=0, targets=["Purple"])
    assert {r.color for r in only} == {"Purple"} and len(only) == 2


def test_missing_targets_are_the_colors_without_a_photo() -> None:
    assert missing_targets(["Red", "Blue"]) == ["Orange", "Burgundy", "Purple"]
    assert missing_targets(["Red", "Orange", "Purple"]) == ["Burgundy"]
    assert missing_targets(iter(TARGETS)) == []
