"""Vehicle-region color features: shape, determinism, and what they say about simple images."""

from __future__ import annotations

import time

import numpy as np
import pytest
from PIL import Image, ImageDraw

from cartag.models import color_features as cf

RGB = tuple[int, int, int]


def _slices() -> dict[str, slice]:
    out, start = {}, 0
    for name, length in cf.FEATURE_LAYOUT:
        out[name] = slice(start, start + length)
        start += length
    return out


PARTS = _slices()


def _car_on(background: RGB, body: RGB, size: tuple[int, int] = (320, 240)) -> Image.Image:
    """A crude car: a body and a cabin in the middle, two dark wheels, on a flat background."""
    w, h = size
    image = Image.new("RGB", size, background)
    draw = ImageDraw.Draw(image)
    draw.rectangle((int(0.18 * w), int(0.45 * h), int(0.82 * w), int(0.75 * h)), fill=body)
    draw.rectangle((int(0.32 * w), int(0.3 * h), int(0.66 * w), int(0.46 * h)), fill=body)
    for cx in (0.3, 0.7):
        x, y, r = int(cx * w), int(0.76 * h), int(0.07 * w)
        draw.ellipse((x - r, y - r, x + r, y + r), fill=(20, 20, 20))
    return image


def _hue_mass(vector: np.ndarray) -> np.ndarray:
    """(HUE_BINS,) chromatic vehicle mass per hue bin."""
    hist = vector[PARTS["fg_chromatic_hist"]]
    return hist.reshape(cf.HUE_BINS, cf.CHROMA_BINS * cf.LIGHT_BINS).sum(axis=1)


def _hue_bin(rgb: RGB) -> int:
    lab = cf.rgb_to_lab(np.asarray(rgb, dtype=np.float32) / 255.0)
    hue = np.mod(np.arctan2(lab[2], lab[1]), 2 * np.pi)
    return int(hue / (2 * np.pi) * cf.HUE_BINS) % cf.HUE_BINS


def test_layout_adds_up() -> None:
    assert sum(n for _, n in cf.FEATURE_LAYOUT) == cf.FEATURE_DIM
    assert cf.FEATURE_DIM == 97


@pytest.mark.parametrize("mode", ["RGB", "RGBA", "L", "P"])
def test_shape_dtype_and_any_mode(mode: str) -> None:
    image = _car_on((255, 255, 255), (200, 20, 20)).convert(mode)
    vector = cf.color_features(image)
    assert vector.shape == (cf.FEATURE_DIM,) and vector.dtype == np.float32
    assert np.all(np.isfinite(vector))
    batch = cf.color_features_batch([image, image])
    assert batch.shape == (2, cf.FEATURE_DIM)
    assert cf.color_features_batch([]).shape == (0, cf.FEATURE_DIM)


def test_a_batch_gives_each_image_its_own_vector() -> None:
    # Images of different colors (one without any chromatic pixel) in one batch:
    # per-image sums must not leak across images.
    images = [
        _car_on((255, 255, 255), (200, 20, 20)),
        _car_on((40, 40, 40), (128, 128, 128)),
        _car_on((90, 140, 210), (30, 120, 40), size=(200, 300)),
    ]
    batch = cf.color_features_batch(images)
    for image, row in zip(images, batch, strict=True):
        np.testing.assert_array_equal(cf.color_features(image), row)
    assert not np.array_equal(batch[0], batch[2])


def test_batch_input_shape_is_checked() -> None:
    with pytest.raises(ValueError, match="batch"):
        cf.features_from_rgb_batch(np.zeros((cf.SIZE, cf.SIZE, 3), dtype=np.uint8))
    empty = cf.features_from_rgb_batch(np.zeros((0, cf.SIZE, cf.SIZE, 3), dtype=np.uint8))
    assert empty.shape == (0, cf.FEATURE_DIM)


def test_deterministic() -> None:
    image = _car_on((90, 140, 210), (30, 120, 40))
    np.testing.assert_array_equal(cf.color_features(image), cf.color_features(image.copy()))


def test_vehicle_and_ring_masses_sum_to_one() -> None:
    vector = cf.color_features(_car_on((240, 240, 240), (20, 40, 160)))
    fg = vector[PARTS["fg_chromatic_hist"]].sum() + vector[PARTS["fg_achromatic_hist"]].sum()
    assert fg == pytest.approx(1.0, abs=1e-4)
    assert vector[PARTS["fg_chromatic_share"]][0] == pytest.approx(
        vector[PARTS["fg_chromatic_hist"]].sum(), abs=1e-4
    )
    assert vector[PARTS["ring_hist"]].sum() == pytest.approx(1.0, abs=1e-4)


def test_red_car_on_white_is_red_dominant_and_background_down_weighted() -> None:
    image = _car_on((255, 255, 255), (200, 20, 20))
    vector = cf.color_features(image)
    hue = _hue_mass(vector)
    assert int(hue.argmax()) in {_hue_bin((200, 20, 20)), (_hue_bin((200, 20, 20)) + 1) % 12}
    # Soft hue binning shares the red between two neighbouring bins.
    assert np.sort(hue)[-2:].sum() > 0.5
    # White is most of the picture but a minority of the vehicle-weighted mass.
    pixels = np.asarray(image)
    white_fraction = float((pixels.min(axis=2) > 240).mean())
    white_mass = float(vector[PARTS["fg_achromatic_hist"]][-2:].sum())
    assert white_fraction > 0.5
    assert white_mass < 0.6 * white_fraction
    assert np.sort(hue)[-2:].sum() > white_mass
    # The ring, by contrast, is all white.
    ring = vector[PARTS["ring_hist"]]
    assert ring[-1] > 0.95


@pytest.mark.parametrize(
    ("color", "achromatic_bin"),
    [((0, 0, 0), 0), ((128, 128, 128), None), ((255, 255, 255), 5)],
)
def test_flat_achromatic_images(color: RGB, achromatic_bin: int | None) -> None:
    vector = cf.color_features(Image.new("RGB", (100, 80), color))
    assert vector[PARTS["fg_chromatic_share"]][0] == pytest.approx(0.0, abs=1e-6)
    achromatic = vector[PARTS["fg_achromatic_hist"]]
    assert achromatic.sum() == pytest.approx(1.0, abs=1e-4)
    if achromatic_bin is not None:
        assert achromatic[achromatic_bin] == pytest.approx(1.0, abs=1e-4)
    else:
        assert achromatic[0] < 0.01 and achromatic[-1] < 0.01


@pytest.mark.parametrize(
    "color", [(220, 30, 30), (30, 160, 40), (30, 60, 200), (240, 220, 20), (240, 90, 200)]
)
def test_flat_colors_land_in_their_hue_bin(color: RGB) -> None:
    vector = cf.color_features(Image.new("RGB", (64, 48), color))
    hue = _hue_mass(vector)
    assert hue.sum() == pytest.approx(1.0, abs=1e-4)
    # Soft binning splits the mass between the two nearest bins.
    top_two = set(np.argsort(-hue)[:2].tolist())
    assert _hue_bin(color) in top_two
    assert np.sort(hue)[-2:].sum() == pytest.approx(1.0, abs=1e-4)


def test_fast_enough() -> None:
    image = _car_on((255, 255, 255), (200, 20, 20), size=(224, 224))
    cf.color_features(image)
    start = time.perf_counter()
    for _ in range(20):
        cf.color_features(image)
    per_image = (time.perf_counter() - start) / 20
    # The budget is 3 ms; a loaded CI machine gets a generous margin.
    assert per_image < 0.03
