"""The independent evaluation placeholder generator."""

from __future__ import annotations

from cartag.imaging.placeholders import FAMILIES, make_placeholder
from cartag.training.datasets.dataset import image_key
from cartag.training.datasets.placeholders_eval import (
    EVAL_FAMILIES,
    EVAL_SIZES,
    generate_eval_placeholders,
    make_eval_placeholder,
)


def test_eval_placeholders_are_deterministic() -> None:
    n = 2 * len(EVAL_FAMILIES)
    first = generate_eval_placeholders(n, seed=5)
    again = generate_eval_placeholders(n, seed=5)
    assert [image_key(p.image) for p in first] == [image_key(p.image) for p in again]
    assert [p.family for p in first] == list(EVAL_FAMILIES) * 2
    assert image_key(make_eval_placeholder(5, 3).image) == image_key(first[3].image)
    other = generate_eval_placeholders(n, seed=6)
    assert {image_key(p.image) for p in first}.isdisjoint(image_key(p.image) for p in other)


def test_eval_placeholders_are_separate_from_the_training_generator() -> None:
    assert set(EVAL_FAMILIES).isdisjoint(FAMILIES)
    images = generate_eval_placeholders(len(EVAL_FAMILIES), seed=0)
    for p in images:
        assert p.image.mode == "RGB" and p.image.size in EVAL_SIZES
        assert p.id.startswith("placeholder-eval/0/")
        # Not a flat card: every design draws something.
        low, high = p.image.convert("L").getextrema()
        assert high - low > 30, p.family
    training = {image_key(make_placeholder(0, i).image) for i in range(len(FAMILIES))}
    assert training.isdisjoint(image_key(p.image) for p in images)
