"""Restaging white-backdrop Stock photos: the backdrop mask, the new backdrop, the guard."""

from __future__ import annotations

import numpy as np

from cartag.training.bundled.finetune import TrainingImages, restage_masks
from cartag.training.datasets.restage import backdrop_mask, random_backdrop, restage, restageable
from cartag.vocab import COLORS, IMAGE_TYPES

SIDE = 64


def _studio_shot(shadow: bool = False) -> np.ndarray:
    """A dark 'car' on white, with a white 'window' inside it that the backdrop cannot reach."""
    pixels = np.full((SIDE, SIDE, 3), 250, dtype=np.uint8)
    pixels[20:44, 12:52] = (150, 20, 30)
    pixels[24:30, 20:30] = 250
    if shadow:
        pixels[44:48, 12:52] = 200
    return pixels


def test_the_mask_covers_the_border_connected_white_only() -> None:
    alpha = backdrop_mask(_studio_shot())
    assert alpha.shape == (SIDE, SIDE) and alpha.dtype == np.float32
    assert alpha[0, 0] == 1.0 and alpha[-1, -1] == 1.0 and alpha[10, 32] == 1.0
    assert alpha[32, 32] == 0.0  # the car
    assert alpha[27, 25] == 0.0  # the white window inside the car
    # Feathered: the car's edge is partly backdrop.
    assert 0.0 < alpha[20, 32] < 1.0 or 0.0 < alpha[19, 32] < 1.0


def test_restageable_needs_a_white_backdrop_that_did_not_leak() -> None:
    assert restageable(backdrop_mask(_studio_shot()))
    noisy = np.random.default_rng(0).integers(0, 160, size=(SIDE, SIDE, 3), dtype=np.uint8)
    assert not restageable(backdrop_mask(noisy))
    assert not restageable(backdrop_mask(np.full((SIDE, SIDE, 3), 250, dtype=np.uint8)))


def test_restage_repaints_the_backdrop_and_keeps_the_car() -> None:
    pixels = _studio_shot()
    alpha = backdrop_mask(pixels)
    out = restage(pixels, alpha, np.random.default_rng(3))
    assert out.shape == pixels.shape and out.dtype == np.uint8
    car = alpha == 0
    np.testing.assert_array_equal(out[car], pixels[car])
    backdrop = alpha == 1
    assert np.abs(out[backdrop].astype(int) - 250).mean() > 10
    again = restage(pixels, alpha, np.random.default_rng(3))
    np.testing.assert_array_equal(out, again)


def test_a_shadow_on_white_stays_a_shadow() -> None:
    lit, shadowed = _studio_shot(), _studio_shot(shadow=True)
    alpha = backdrop_mask(shadowed)
    assert alpha[46:48, 14:50].min() > 0.9  # the light grey shadow counts as backdrop
    a = restage(lit, alpha, np.random.default_rng(5)).astype(int)
    b = restage(shadowed, alpha, np.random.default_rng(5)).astype(int)
    assert (b[46:48, 14:50] < a[46:48, 14:50]).all()


def test_random_backdrops_vary_and_stay_in_range() -> None:
    rng = np.random.default_rng(0)
    backdrops = [random_backdrop(rng, 16, 24) for _ in range(20)]
    assert all(b.shape == (16, 24, 3) and 0 <= b.min() and b.max() <= 255 for b in backdrops)
    assert len({round(float(b.mean())) for b in backdrops}) > 10


def test_restage_masks_pick_restageable_stock_rows_of_safe_colors() -> None:
    noisy = np.random.default_rng(0).integers(0, 160, size=(SIDE, SIDE, 3), dtype=np.uint8)
    rows = [
        (_studio_shot(), "Stock", "Red"),  # restaged
        (_studio_shot(), "Stock", "White"),  # a white body may merge with the backdrop
        (_studio_shot(), "Dealer", "Red"),  # only Stock
        (noisy, "Stock", "Blue"),  # no white backdrop
        (_studio_shot(), "Stock", "Blue"),  # not among the rows asked for
    ]
    data = TrainingImages(
        pixels=np.stack([r[0] for r in rows]),
        type_idx=np.array([IMAGE_TYPES.index(r[1]) for r in rows]),
        color_idx=np.array([COLORS.index(r[2]) for r in rows]),
        holdout=np.array([False, False, False, False, True]),
        data_hash="0" * 64,
    )
    masks = restage_masks(data, np.flatnonzero(~data.holdout))
    assert list(masks) == [0]
    assert masks[0].shape == (SIDE, SIDE)
