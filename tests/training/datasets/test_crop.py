"""The crop step: letterbox bars go, white studio margins and flat cards stay."""

from __future__ import annotations

import pytest
from PIL import Image

from cartag.training.datasets.crop import LetterboxCropper, NoCropper, make_cropper


def _framed(
    size: tuple[int, int], inner: tuple[int, int, int, int], bar: tuple[int, int, int]
) -> Image.Image:
    image = Image.new("RGB", size, bar)
    left, top, right, bottom = inner
    for x in range(left, right):
        for y in range(top, bottom):
            image.putpixel((x, y), ((x * 7) % 256, (y * 11) % 256, 128))
    return image


def test_black_letterbox_bars_are_trimmed() -> None:
    image = _framed((120, 100), (0, 15, 120, 85), (0, 0, 0))
    assert LetterboxCropper().box(image) == (0, 15, 120, 85)


def test_pillarbox_on_grey_is_trimmed() -> None:
    image = _framed((120, 100), (20, 0, 100, 100), (60, 60, 60))
    assert LetterboxCropper().box(image) == (20, 0, 100, 100)


def test_white_margins_are_kept_by_default_and_trimmed_on_request() -> None:
    image = _framed((120, 100), (0, 15, 120, 85), (255, 255, 255))
    assert LetterboxCropper().box(image) is None
    assert LetterboxCropper(keep_white=False).box(image) == (0, 15, 120, 85)


def test_thin_borders_flat_images_and_huge_bars_are_left_alone() -> None:
    assert LetterboxCropper().box(_framed((120, 100), (0, 1, 120, 99), (0, 0, 0))) is None
    assert LetterboxCropper().box(Image.new("RGB", (80, 60), (30, 30, 30))) is None
    # Bars covering 70% of the height: more than max_trim, so it is a design, not letterboxing.
    assert LetterboxCropper().box(_framed((120, 100), (0, 35, 120, 65), (0, 0, 0))) is None


def test_a_one_sided_dark_background_is_not_letterboxing() -> None:
    image = _framed((120, 100), (20, 0, 120, 100), (0, 0, 0))
    assert LetterboxCropper().box(image) is None
    assert LetterboxCropper(symmetric=False).box(image) == (20, 0, 120, 100)


def test_croppers_by_name() -> None:
    assert isinstance(make_cropper("none"), NoCropper)
    assert NoCropper().box(Image.new("RGB", (10, 10))) is None
    assert make_cropper("letterbox").name == "letterbox"
    with pytest.raises(ValueError, match="letterbox, none"):
        make_cropper("smart")
