"""The synthetic placeholder generator: deterministic, varied, one image per (seed, index)."""

from __future__ import annotations

from cartag.imaging.placeholders import FAMILIES, generate_placeholders, make_placeholder
from cartag.training.datasets.dataset import image_key


def test_placeholders_are_deterministic_and_varied() -> None:
    first = generate_placeholders(len(FAMILIES), seed=3)
    again = generate_placeholders(len(FAMILIES), seed=3)
    assert [p.family for p in first] == list(FAMILIES)
    assert [image_key(p.image) for p in first] == [image_key(p.image) for p in again]
    other = generate_placeholders(len(FAMILIES), seed=4)
    assert {image_key(p.image) for p in first}.isdisjoint(image_key(p.image) for p in other)
    for placeholder in first:
        assert placeholder.image.mode == "RGB"
        assert min(placeholder.image.size) >= 200


def test_image_depends_only_on_seed_and_index() -> None:
    assert image_key(make_placeholder(0, 9).image) == image_key(generate_placeholders(10)[9].image)
