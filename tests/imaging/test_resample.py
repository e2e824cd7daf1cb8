"""Pillow's LANCZOS shrink as matrix products: the same pixels as Pillow, every time."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cartag.imaging.keys import phash
from cartag.imaging.resample import lanczos_matrix, lanczos_shrink
from tests.support.images import real_photos

# The network views the hash is taken of (Lite0/1/2), odd sides, a side one pixel over
# the output, and large ones.
SIDES = [224, 240, 260, 33, 47, 64, 101, 255, 333, 640, 1024]


def _pillow(gray: np.ndarray, side: int) -> np.ndarray:
    return np.asarray(Image.fromarray(gray).resize((side, side), Image.Resampling.LANCZOS))


def _images(rng: np.random.Generator, n: int) -> list[np.ndarray]:
    """Noise, hard black/white edges (the filter's negative lobes clip) and smooth ramps."""
    noise = rng.integers(0, 256, (n, n), dtype=np.uint8)
    edges = ((rng.random((n, n)) > 0.5) * 255).astype(np.uint8)
    steps = rng.integers(-3, 4, (n, n)).cumsum(axis=1) + 128
    return [noise, edges, np.clip(steps, 0, 255).astype(np.uint8)]


@pytest.mark.parametrize("n", SIDES)
def test_the_shrink_gives_pillows_pixels(n: int) -> None:
    rng = np.random.default_rng(n)
    for gray in _images(rng, n) + _images(rng, n):
        for side in (32, 8, n - 1):
            np.testing.assert_array_equal(lanczos_shrink(gray, side), _pillow(gray, side))


def test_real_photos_hash_as_pillows_thumbnail_does(shared_data: Path) -> None:
    for path in real_photos(shared_data, 40):
        with Image.open(path) as image:
            view = image.convert("RGB").resize((224, 224), Image.Resampling.BILINEAR)
        gray = np.asarray(view.convert("L"))
        np.testing.assert_array_equal(lanczos_shrink(gray, 32), _pillow(gray, 32))


def test_phash_of_other_shapes_goes_through_pillow() -> None:
    # Not square, or smaller than the thumbnail: Pillow's own resize, same hash as before.
    ramp = np.arange(60 * 40, dtype=np.uint32).reshape(40, 60) % 251
    for array in (ramp, ramp[:20, :20], ramp.T):
        image = Image.fromarray(array.astype(np.uint8))
        assert len(phash(image)) == 16
    square = Image.fromarray((ramp[:40, :40] * 3 % 256).astype(np.uint8))
    assert phash(square) == phash(square.convert("RGB"))  # the same grey either way


def test_bad_input_is_refused() -> None:
    with pytest.raises(ValueError, match="square uint8"):
        lanczos_shrink(np.zeros((10, 40), np.uint8), 8)
    with pytest.raises(ValueError, match="square uint8"):
        lanczos_shrink(np.zeros((40, 40), np.float32), 32)
    with pytest.raises(ValueError, match="cannot shrink"):
        lanczos_shrink(np.zeros((20, 20), np.uint8), 32)
    assert lanczos_shrink(np.full((32, 32), 7, np.uint8), 32).tolist() == [[7] * 32] * 32
    assert not lanczos_matrix(224, 32).flags.writeable  # cached and shared between threads
