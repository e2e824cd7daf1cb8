"""The vehicle CAM (numpy): shape, normalisation, and that it points at the evidence."""

from __future__ import annotations

import numpy as np
from PIL import Image

from cartag.models import color_features as cf
from cartag.models.cam_color_features import (
    FEATURE_DIM,
    PRIOR,
    cam_color_features_batch,
    features_from_rgb_weighted,
)
from cartag.models.vehicle_mask import (
    VEHICLE_INDEX,
    normalise,
    pixel_weights,
    upsample,
    vehicle_cam,
    vehicle_cam_from_maps,
)


def _network_outputs(b: int = 2, c: int = 16) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A fake final map whose channel 0 fires at (2, 5), and an fc whose vehicle
    classes read channel 0 (the others read channel 1, which is flat)."""
    rng = np.random.default_rng(0)
    fmap = rng.uniform(0.0, 0.1, (b, c, 7, 7)).astype(np.float32)
    fmap[:, 0, 2, 5] = 5.0
    fmap[:, 1] = 1.0
    weight = np.zeros((1000, c), dtype=np.float32)
    weight[:, 1] = 1.0
    weight[VEHICLE_INDEX, 0] = 1.0
    return fmap, weight, np.zeros(1000, dtype=np.float32)


def test_cam_shape_range_and_peak() -> None:
    fmap, weight, bias = _network_outputs()
    cam = vehicle_cam(fmap, weight, bias)
    assert cam.shape == (2, 7, 7) and cam.dtype == np.float32
    assert cam.min() == 0.0 and np.allclose(cam.max(axis=(1, 2)), 1.0)
    assert divmod(int(cam[0].argmax()), 7) == (2, 5)


def test_cam_from_cached_maps_matches() -> None:
    fmap, weight, bias = _network_outputs()
    maps = np.einsum("kc,bchw->bkhw", weight[VEHICLE_INDEX], fmap)
    logits = fmap.mean(axis=(2, 3)) @ weight.T + bias
    got = vehicle_cam_from_maps(maps, logits[:, VEHICLE_INDEX])
    np.testing.assert_allclose(got, vehicle_cam(fmap, weight, bias), atol=1e-5)


def test_flat_map_is_all_ones() -> None:
    assert np.array_equal(normalise(np.full((1, 7, 7), 3.0)), np.ones((1, 7, 7), np.float32))


def test_upsample_and_weights_on_a_generated_image() -> None:
    # A red "car" block low in the frame on a white background; the CAM marks it.
    image = Image.new("RGB", (320, 240), "white")
    image.paste((200, 20, 20), (60, 120, 260, 210))
    cam = np.zeros((1, 7, 7), dtype=np.float32)
    cam[0, 4:6, 1:6] = 1.0
    up = upsample(cam, cf.SIZE)
    assert up.shape == (1, cf.SIZE, cf.SIZE)
    assert 0.0 <= up.min() and up.max() <= 1.0 + 1e-6
    for prior in (None, PRIOR):
        w = pixel_weights(up, prior)
        assert w.shape == (1, cf.SIZE * cf.SIZE)
        np.testing.assert_allclose(w.sum(axis=1), 1.0, rtol=1e-5)
        assert (w >= 0).all()
    features = cam_color_features_batch([image], cam, with_prior=False)
    assert features.shape == (1, FEATURE_DIM)
    base = cf.color_features(image)
    # The CAM puts more of the weight on the red body than the centred prior does.
    sizes = dict(cf.FEATURE_LAYOUT)
    share = sizes["fg_chromatic_hist"] + sizes["fg_achromatic_hist"]  # fg_chromatic_share
    assert features[0, share] > base[share] + 0.1


def test_prior_weights_reproduce_vehicle_lab_v1() -> None:
    rng = np.random.default_rng(1)
    rgb = rng.integers(0, 256, (3, cf.SIZE, cf.SIZE, 3), dtype=np.uint8)
    weights = np.tile(PRIOR.reshape(1, -1), (3, 1))
    np.testing.assert_array_equal(
        features_from_rgb_weighted(rgb, weights), cf.features_from_rgb_batch(rgb)
    )
