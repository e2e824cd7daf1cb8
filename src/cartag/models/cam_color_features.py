"""Vehicle color features weighted by a CAM of the vehicle (``vehicle-lab-cam-v1``).

The statistics of :mod:`cartag.models.color_features` (same layout,
:data:`FEATURE_DIM` values), but each pixel weighs what a per-image map says
(:mod:`cartag.models.vehicle_mask`: the vehicle class-activation map, alone or
times the centred prior) instead of the fixed centred prior. ``vehicle-lab-v1``
is untouched; this is an experiment (``benchmarks/vehicle_color.py``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

import numpy as np
from PIL import Image

from cartag.models.color_features import (
    FEATURE_DIM,
    SIZE,
    _centre_prior,
    features_from_rgb_batch,
    reduce_image,
)
from cartag.models.vehicle_mask import pixel_weights, upsample

__all__ = ["FEATURE_DIM", "FEATURE_ID", "features_from_rgb_weighted", "cam_color_features_batch"]

# Caches key on this id (the CAM source and the weighting are part of it, see
# cam_color_features_batch): bump it whenever the output changes.
FEATURE_ID: Final[str] = "vehicle-lab-cam-v1"
PRIOR: Final[np.ndarray] = _centre_prior(SIZE)


def features_from_rgb_weighted(rgb: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Color features of B reduced images with per-image pixel weights.

    :func:`cartag.models.color_features.features_from_rgb_batch` with ``weights`` in
    place of its fixed centred prior (with the prior for every image it is ``vehicle-lab-v1``).

    Args:
        rgb: uint8 (B, SIZE, SIZE, 3) sRGB images from :func:`reduce_image`.
        weights: float (B, SIZE*SIZE) non-negative pixel weights, each row summing to 1
            (:func:`cartag.models.vehicle_mask.pixel_weights`).

    Returns:
        float32 (B, FEATURE_DIM).
    """
    return features_from_rgb_batch(rgb, weights)


def cam_color_features_batch(
    images: Sequence[Image.Image] | np.ndarray, cam: np.ndarray, *, with_prior: bool = True
) -> np.ndarray:
    """Color features of B images weighted by their vehicle CAMs.

    Args:
        images: B PIL images, or uint8 (B, SIZE, SIZE, 3) already reduced.
        cam: float (B, h, w) vehicle CAMs in [0, 1] (:func:`vehicle_mask.vehicle_cam`).
        with_prior: Multiply the CAM with the centred prior (else the CAM alone).

    Returns:
        float32 (B, FEATURE_DIM).
    """
    rgb = images if isinstance(images, np.ndarray) else np.stack([reduce_image(i) for i in images])
    if len(rgb) == 0:
        return np.zeros((0, FEATURE_DIM), dtype=np.float32)
    weights = pixel_weights(upsample(cam, SIZE), PRIOR if with_prior else None)
    return features_from_rgb_weighted(rgb, weights)
