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
    _CHROMA_HI,
    _CHROMA_LO,
    _CHROMA_SPLIT,
    _DARK_L,
    _FG_CHROMATIC,
    _LIGHT_EDGES,
    _LINEAR_LUT,
    _RING_IDX,
    _RING_SHARE,
    _SPECULAR_L,
    ACHROMATIC_BINS,
    CHROMA_BINS,
    FEATURE_DIM,
    HUE_BINS,
    LIGHT_BINS,
    RING_ACHROMATIC_BINS,
    RING_HUE_BINS,
    SIZE,
    _centre_prior,
    _hist,
    _hue,
    _linear_to_lab,
    _soft_hue,
    _soft_linear,
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

    The same computation and layout as
    :func:`cartag.models.color_features.features_from_rgb_batch`, with ``weights``
    in place of its fixed centred prior (which is what that function gets with
    ``weights`` = the prior for every image).

    Args:
        rgb: uint8 (B, SIZE, SIZE, 3) sRGB images from :func:`reduce_image`.
        weights: float (B, SIZE*SIZE) non-negative pixel weights, each row summing to 1
            (:func:`cartag.models.vehicle_mask.pixel_weights`).

    Returns:
        float32 (B, FEATURE_DIM).
    """
    if rgb.ndim != 4 or rgb.shape[1:] != (SIZE, SIZE, 3) or rgb.dtype != np.uint8:
        raise ValueError(
            f"expected a uint8 (B, {SIZE}, {SIZE}, 3) batch, got {rgb.dtype} {rgb.shape}"
        )
    b, n = rgb.shape[0], SIZE * SIZE
    if weights.shape != (b, n):
        raise ValueError(f"expected ({b}, {n}) pixel weights, got {weights.shape}")
    if b == 0:
        return np.zeros((0, FEATURE_DIM), dtype=np.float32)
    lab = _linear_to_lab(_LINEAR_LUT[rgb.reshape(-1, 3)])  # (B*n, 3)
    image = np.repeat(np.arange(b, dtype=np.int64), n)  # (B*n,) image of each pixel
    pixel = np.asarray(weights, dtype=np.float64)
    weights = pixel.astype(np.float32).reshape(-1)  # per image sums to 1
    light = lab[:, 0]
    chroma = np.hypot(lab[:, 1], lab[:, 2])
    chromatic = np.clip((chroma - _CHROMA_LO) * (1.0 / (_CHROMA_HI - _CHROMA_LO)), 0.0, 1.0)
    # Dark pixels' and low-chroma highlights' hue is noise: they go to the achromatic bins.
    chromatic[(light <= _DARK_L) | ((light > _SPECULAR_L) & (chroma < 25.0))] = 0.0
    w_chrom = weights * chromatic
    w_achrom = weights - w_chrom

    # Only chromatic pixels enter the hue histogram (often a minority: grey, white, black cars).
    sel = np.flatnonzero(w_chrom > 0)
    h0, h1, hf = _soft_hue(_hue(lab[sel]), HUE_BINS)
    c0, c1, cf = _soft_linear(chroma[sel], _CHROMA_LO, 2 * _CHROMA_SPLIT, CHROMA_BINS)
    l0, l1, lf = _soft_linear(light[sel], _LIGHT_EDGES[0] - 15, _LIGHT_EDGES[1] + 15, LIGHT_BINS)
    ws = w_chrom[sel]
    offset = image[sel] * _FG_CHROMATIC
    pairs = []
    for h_idx, h_w in ((h0, 1 - hf), (h1, hf)):
        for c_idx, c_w in ((c0, 1 - cf), (c1, cf)):
            for l_idx, l_w in ((l0, 1 - lf), (l1, lf)):
                idx = (h_idx * CHROMA_BINS + c_idx) * LIGHT_BINS + l_idx
                pairs.append((offset + idx, ws * h_w * c_w * l_w))
    fg_chrom = _hist(pairs, b * _FG_CHROMATIC).reshape(b, _FG_CHROMATIC)
    a0, a1, af = _soft_linear(light, 0.0, 100.0, ACHROMATIC_BINS)
    a_off = image * ACHROMATIC_BINS
    fg_achrom = _hist(
        [(a_off + a0, w_achrom * (1 - af)), (a_off + a1, w_achrom * af)], b * ACHROMATIC_BINS
    ).reshape(b, ACHROMATIC_BINS)

    chrom_mass = np.bincount(image[sel], weights=ws, minlength=b)  # (B,)
    lab64 = lab.astype(np.float64)
    per_image = lab64.reshape(b, n, 3)
    mean_lab = np.einsum("bn,bnk->bk", pixel, per_image)  # (B, 3)
    second = np.einsum("bn,bnk->bk", pixel, per_image * per_image)
    std_lab = np.sqrt(np.maximum(second - mean_lab**2, 0.0))
    chrom_sum = np.stack(
        [np.bincount(image[sel], weights=ws * lab64[sel, k], minlength=b) for k in range(3)],
        axis=1,
    )  # (B, 3)
    has_chroma = chrom_mass > 1e-6
    mean_chrom = np.where(
        has_chroma[:, None], chrom_sum / np.where(has_chroma, chrom_mass, 1.0)[:, None], mean_lab
    )

    ring_lab = lab.reshape(b, n, 3)[:, _RING_IDX].reshape(-1, 3)
    ring_size = len(_RING_IDX)
    ring_off = np.repeat(np.arange(b, dtype=np.int64), ring_size)
    ring_c = (chromatic.reshape(b, n)[:, _RING_IDX] * _RING_SHARE).ravel()
    rh0, rh1, rhf = _soft_hue(_hue(ring_lab), RING_HUE_BINS)
    hue_off = ring_off * RING_HUE_BINS
    ring_hue = _hist(
        [(hue_off + rh0, ring_c * (1 - rhf)), (hue_off + rh1, ring_c * rhf)], b * RING_HUE_BINS
    ).reshape(b, RING_HUE_BINS)
    r0, r1, rf = _soft_linear(ring_lab[:, 0], 0.0, 100.0, RING_ACHROMATIC_BINS)
    ring_a = np.tile(_RING_SHARE, b) - ring_c
    achrom_off = ring_off * RING_ACHROMATIC_BINS
    ring_achrom = _hist(
        [(achrom_off + r0, ring_a * (1 - rf)), (achrom_off + r1, ring_a * rf)],
        b * RING_ACHROMATIC_BINS,
    ).reshape(b, RING_ACHROMATIC_BINS)

    # Lab moments are scaled to roughly unit range so no part dominates before standardising.
    vector = np.concatenate(
        [
            fg_chrom,
            fg_achrom,
            chrom_mass[:, None],
            mean_chrom / 100.0,
            mean_lab / 100.0,
            std_lab / 100.0,
            ring_hue,
            ring_achrom,
        ],
        axis=1,
    )
    return vector.astype(np.float32)


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
