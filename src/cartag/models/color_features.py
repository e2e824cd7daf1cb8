"""Hand-made color statistics of the vehicle region of a photo (numpy only, ~1 ms/image).

The backbone embedding describes the whole picture, so a grey car on a white
studio background or a brown car in front of green trees gets part of its
"color" from the background. These features look at the vehicle instead:

1. The image is reduced to ``SIZE x SIZE`` RGB and converted to CIE Lab (D65).
2. A centred Gaussian prior (a little below the middle, sigma 0.2 x 0.25 of
   the frame) weights the pixels: listing photos frame the car, so the middle
   is car body and the border is background.
3. Chroma statistics exclude very dark pixels (tyres, shadows, windows: their
   hue is noise) and bright low-chroma specular highlights; both still count
   in the achromatic (black ... white) shares.
4. The border ring gets its own small histogram, so a classifier can tell "grey
   car on white" from "white car on grey" instead of guessing the background.

Down-weighting pixels that resemble the border ring (background subtraction)
was tried and measured worse on cross-validation (car photos are tight crops:
the car touches the ring, and white/silver cars on white studio backgrounds
lose their body pixels), so the prior alone defines the vehicle region.

The result is a fixed-length float32 vector (:data:`FEATURE_DIM`), see
:func:`color_features` for the layout. Everything is deterministic.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

import numpy as np
from PIL import Image

from cartag.models.backbone import to_rgb

# Heads, model configs and feature caches key on this id: bump it whenever the
# output of color_features() changes.
FEATURE_ID: Final[str] = "vehicle-lab-v1"
SIZE: Final[int] = 64
HUE_BINS: Final[int] = 12
CHROMA_BINS: Final[int] = 2
LIGHT_BINS: Final[int] = 3
ACHROMATIC_BINS: Final[int] = 6
RING_HUE_BINS: Final[int] = 6
RING_ACHROMATIC_BINS: Final[int] = 3

_FG_CHROMATIC: Final[int] = HUE_BINS * CHROMA_BINS * LIGHT_BINS
_RING: Final[int] = RING_HUE_BINS + RING_ACHROMATIC_BINS
# Layout of the vector; offsets are in this order.
FEATURE_LAYOUT: Final[tuple[tuple[str, int], ...]] = (
    ("fg_chromatic_hist", _FG_CHROMATIC),
    ("fg_achromatic_hist", ACHROMATIC_BINS),
    ("fg_chromatic_share", 1),
    ("fg_mean_lab_chromatic", 3),
    ("fg_mean_lab", 3),
    ("fg_std_lab", 3),
    ("ring_hist", _RING),
)
FEATURE_DIM: Final[int] = sum(n for _, n in FEATURE_LAYOUT)

_RING_WIDTH: Final[int] = 4
_DARK_L: Final[float] = 18.0
_SPECULAR_L: Final[float] = 92.0
# Chroma ramp (Lab C*) between "achromatic" and "chromatic", soft to avoid flicker.
_CHROMA_LO: Final[float] = 6.0
_CHROMA_HI: Final[float] = 16.0
_CHROMA_SPLIT: Final[float] = 35.0
_LIGHT_EDGES: Final[tuple[float, float]] = (40.0, 70.0)

_SRGB_TO_XYZ: Final[np.ndarray] = np.asarray(
    [[0.4124, 0.3576, 0.1805], [0.2126, 0.7152, 0.0722], [0.0193, 0.1192, 0.9505]],
    dtype=np.float32,
)
_WHITE_D65: Final[np.ndarray] = np.asarray([0.95047, 1.0, 1.08883], dtype=np.float32)


def rgb_to_lab(rgb: np.ndarray) -> np.ndarray:
    """Convert sRGB to CIE Lab (D65).

    Args:
        rgb: float32 (..., 3) sRGB in [0, 1].

    Returns:
        float32 (..., 3): L in [0, 100], a and b roughly in [-110, 110].
    """
    return _linear_to_lab(_srgb_to_linear(np.asarray(rgb, dtype=np.float32)))


def _srgb_to_linear(rgb: np.ndarray) -> np.ndarray:
    out: np.ndarray = np.where(rgb <= 0.04045, rgb / 12.92, ((rgb + 0.055) / 1.055) ** 2.4)
    return out.astype(np.float32, copy=False)


# uint8 sRGB -> linear light: a table lookup instead of a power per pixel.
_LINEAR_LUT: Final[np.ndarray] = _srgb_to_linear(np.arange(256, dtype=np.float32) / 255.0)


def _linear_to_lab(linear: np.ndarray) -> np.ndarray:
    """(..., 3) linear-light RGB -> float32 (..., 3) Lab."""
    xyz = (linear @ _SRGB_TO_XYZ.T) / _WHITE_D65
    f = np.where(xyz > 0.008856, np.cbrt(xyz), 7.787 * xyz + 16.0 / 116.0)
    lab = np.empty_like(f)
    lab[..., 0] = 116.0 * f[..., 1] - 16.0
    lab[..., 1] = 500.0 * (f[..., 0] - f[..., 1])
    lab[..., 2] = 200.0 * (f[..., 1] - f[..., 2])
    out: np.ndarray = lab.astype(np.float32, copy=False)
    return out


def _ring_weights(size: int) -> np.ndarray:
    """(size, size) float32 border-ring weights summing to 1.

    The top edge counts most and the bottom least: cars usually touch the bottom
    and the sides of the frame, rarely the top.
    """
    w = np.zeros((size, size), dtype=np.float32)
    r = _RING_WIDTH
    w[:, :r] = 0.5
    w[:, -r:] = 0.5
    w[-r:, :] = 0.25
    w[:r, :] = 1.0
    return w / w.sum()  # type: ignore[no-any-return]


def _centre_prior(size: int) -> np.ndarray:
    """(size, size) float32 Gaussian summing to 1, centred a little below the middle.

    Cars sit low in the frame; the widths were chosen by cross-validation on the
    training split (0.2 x 0.25 beat 0.15 x 0.18, 0.25 x 0.3, 0.3 x 0.35 and no prior).
    """
    coords = (np.arange(size, dtype=np.float32) + 0.5) / size
    gy = np.exp(-0.5 * ((coords - 0.55) / 0.2) ** 2)
    gx = np.exp(-0.5 * ((coords - 0.5) / 0.25) ** 2)
    prior: np.ndarray = np.outer(gy, gx)
    prior = (prior / prior.sum()).astype(np.float32)
    return prior


_RING_IDX: Final[np.ndarray] = np.flatnonzero(_ring_weights(SIZE).ravel() > 0)
_RING_SHARE: Final[np.ndarray] = _ring_weights(SIZE).ravel()[_RING_IDX]
_PRIOR: Final[np.ndarray] = _centre_prior(SIZE).reshape(-1)


def reduce_image(image: Image.Image, size: int = SIZE) -> np.ndarray:
    """Shrink an image to the working resolution.

    Args:
        image: PIL image of any mode and size.
        size: Output side.

    Returns:
        uint8 (size, size, 3) sRGB.
    """
    # reducing_gap lets PIL box-reduce big photos first: much faster, nearly the same
    # result (and exactly the same for the 224 px training photos).
    small = to_rgb(image).resize((size, size), Image.Resampling.BILINEAR, reducing_gap=3.0)
    return np.asarray(small, dtype=np.uint8)


def _soft_hue(hue: np.ndarray, bins: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Linear interpolation of a circular hue in [0, 2pi) between its two nearest bins."""
    pos = hue / (2 * np.pi) * bins - 0.5
    lo = np.floor(pos)
    frac = (pos - lo).astype(np.float32)
    lo_i = lo.astype(np.int64) % bins
    return lo_i, (lo_i + 1) % bins, frac


def _soft_linear(x: np.ndarray, lo: float, hi: float, bins: int) -> tuple[np.ndarray, ...]:
    """Linear interpolation of x in [lo, hi] between bin centres (clamped at the ends)."""
    pos = np.clip((x - lo) / (hi - lo) * bins - 0.5, 0, bins - 1)
    low = np.minimum(np.floor(pos).astype(np.int64), bins - 2) if bins > 1 else pos.astype(int)
    frac = (pos - low).astype(np.float32)
    return low, low + 1, frac


def _hist(index_pairs: Sequence[tuple[np.ndarray, np.ndarray]], size: int) -> np.ndarray:
    """Sum of weighted bincounts, as one bincount of the concatenated pairs."""
    idx = np.concatenate([i for i, _ in index_pairs])
    weights = np.concatenate([w for _, w in index_pairs])
    return np.bincount(idx, weights=weights, minlength=size)


def _hue(lab: np.ndarray) -> np.ndarray:
    """(N,) Lab hue angle in [0, 2pi) of (N, 3) Lab pixels."""
    return np.mod(np.arctan2(lab[:, 2], lab[:, 1]), 2 * np.pi)  # type: ignore[no-any-return]


def features_from_rgb(rgb: np.ndarray) -> np.ndarray:
    """Color features of one reduced image (see :func:`color_features`).

    Args:
        rgb: uint8 (SIZE, SIZE, 3) sRGB from :func:`reduce_image`.

    Returns:
        float32 (FEATURE_DIM,).
    """
    if rgb.shape != (SIZE, SIZE, 3) or rgb.dtype != np.uint8:
        raise ValueError(f"expected a uint8 ({SIZE}, {SIZE}, 3) image, got {rgb.dtype} {rgb.shape}")
    vector: np.ndarray = features_from_rgb_batch(rgb[None])[0]
    return vector


def features_from_rgb_batch(rgb: np.ndarray, weights: np.ndarray | None = None) -> np.ndarray:
    """Color features of B reduced images at once.

    One pass of numpy calls serves the whole batch (per-image sums are
    bincounts over an image index), so the per-call overhead that dominated
    the one-image version (~60 small calls, ~1.1 ms) is paid once per batch.
    :func:`features_from_rgb` is this function on a batch of one, so a single
    image and the same image in a batch get the same vector.

    Args:
        rgb: uint8 (B, SIZE, SIZE, 3) sRGB images from :func:`reduce_image`.
        weights: float (B, SIZE*SIZE) per-image pixel weights, each row summing to 1,
            in place of the fixed centred prior (an experiment's vehicle map,
            :mod:`cartag.models.cam_color_features`); None: the prior (``vehicle-lab-v1``).

    Returns:
        float32 (B, FEATURE_DIM).
    """
    if rgb.ndim != 4 or rgb.shape[1:] != (SIZE, SIZE, 3) or rgb.dtype != np.uint8:
        raise ValueError(
            f"expected a uint8 (B, {SIZE}, {SIZE}, 3) batch, got {rgb.dtype} {rgb.shape}"
        )
    b, n = rgb.shape[0], SIZE * SIZE
    if weights is not None and weights.shape != (b, n):
        raise ValueError(f"expected ({b}, {n}) pixel weights, got {weights.shape}")
    if b == 0:
        return np.zeros((0, FEATURE_DIM), dtype=np.float32)
    lab = _linear_to_lab(_LINEAR_LUT[rgb.reshape(-1, 3)])  # (B*n, 3)
    image = np.repeat(np.arange(b, dtype=np.int64), n)  # (B*n,) image of each pixel
    pixel = None if weights is None else np.asarray(weights, dtype=np.float64)
    # Per image the weights sum to 1: histograms are shares of the vehicle.
    w = np.tile(_PRIOR, b) if pixel is None else pixel.astype(np.float32).reshape(-1)
    light = lab[:, 0]
    chroma = np.hypot(lab[:, 1], lab[:, 2])
    chromatic = np.clip((chroma - _CHROMA_LO) * (1.0 / (_CHROMA_HI - _CHROMA_LO)), 0.0, 1.0)
    # Dark pixels' and low-chroma highlights' hue is noise: they go to the achromatic bins.
    chromatic[(light <= _DARK_L) | ((light > _SPECULAR_L) & (chroma < 25.0))] = 0.0
    w_chrom = w * chromatic
    w_achrom = w - w_chrom

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
    if pixel is None:
        prior64 = _PRIOR.astype(np.float64)
        mean_lab = prior64 @ per_image  # (B, 3)
        second = prior64 @ (per_image * per_image)
    else:
        mean_lab = np.einsum("bn,bnk->bk", pixel, per_image)
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


def color_features(image: Image.Image) -> np.ndarray:
    """Color features of the vehicle region of one image.

    Layout (:data:`FEATURE_LAYOUT`, 97 values in total):

    - ``fg_chromatic_hist`` (72): vehicle-weighted mass of chromatic pixels in
      12 Lab hue bins x 2 chroma bins x 3 lightness bins (soft binning).
    - ``fg_achromatic_hist`` (6): mass of achromatic pixels (and of dark or
      specular ones) in 6 lightness bins, black ... white.
    - ``fg_chromatic_share`` (1): the chromatic share of the vehicle mass
      (the two histograms sum to 1).
    - ``fg_mean_lab_chromatic``, ``fg_mean_lab``, ``fg_std_lab`` (3 each): Lab
      moments / 100 of the chromatic part and of the whole vehicle region.
    - ``ring_hist`` (9): the border ring's 6 hue bins + 3 achromatic lightness
      bins (what the background looked like).

    Args:
        image: PIL image of any mode and size.

    Returns:
        float32 (FEATURE_DIM,).
    """
    return features_from_rgb(reduce_image(image))


def color_features_batch(images: Sequence[Image.Image]) -> np.ndarray:
    """:func:`color_features` of each image, computed as one batch.

    Args:
        images: B PIL images.

    Returns:
        float32 (B, FEATURE_DIM).
    """
    if not images:
        return np.zeros((0, FEATURE_DIM), dtype=np.float32)
    return features_from_rgb_batch(np.stack([reduce_image(image) for image in images]))
