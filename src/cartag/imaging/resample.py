"""Pillow's LANCZOS shrink of an 8-bit grey image, to the bit, as two matrix products.

The perceptual hash shrinks every new image to 32 x 32 with Pillow's LANCZOS filter
(:func:`cartag.imaging.keys.phash`), and stored hashes depend on that thumbnail's
exact pixels, so a faster path must give the same ones. Pillow resamples in fixed
point (``libImaging/Resample.c``): per output pixel, double-precision filter weights
are normalised, rounded to integers scaled by ``2**22``, multiplied with the 8-bit
inputs and summed with ``2**21`` added, then shifted right by 22 and clipped to
0..255; first along rows (into an 8-bit image), then along columns. The same
integers summed in float64 are exact (every partial sum is below ``2**31``, far
under float64's ``2**53``) in any order, so one (h, w) x (w, W) and one
(H, h) x (h, W) product reproduce it, in about 60 % of the time of Pillow's
per-pixel loop on a 224 x 224 view (0.16 against 0.26 ms, BLAS at one thread).

The weights are computed as Pillow computes them, with the C library's ``sin``
through :func:`math.sin` (numpy's vectorised ``sin`` may differ in the last bit,
which can move a weight's rounding), and cached per (input size, output size).
Only a square shrunk to a smaller square is reproduced (the hash's case: the network
views are 224, 240 or 260 px squares). For other shapes Pillow chooses which pass runs
first by rules of its own (a tall image shrinks vertically first, for one), and
enlarging clips between the passes differently; :func:`lanczos_shrink` refuses those
and callers use Pillow.
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np
import numpy.typing as npt

PRECISION_BITS = 32 - 8 - 2  # Pillow's PRECISION_BITS for 8-bit images
_SUPPORT = 3.0  # the LANCZOS filter's support, in input samples at scale 1


def _sinc(x: float) -> float:
    if x == 0.0:
        return 1.0
    x = x * math.pi
    return math.sin(x) / x


def _lanczos(x: float) -> float:
    if -3.0 <= x < 3.0:
        return _sinc(x) * _sinc(x / 3)
    return 0.0


@lru_cache(maxsize=16)
def lanczos_matrix(in_size: int, out_size: int) -> npt.NDArray[np.float64]:
    """Pillow's fixed-point LANCZOS weights from ``in_size`` samples down to ``out_size``.

    Returns:
        float64 (out_size, in_size) of integers (the weights scaled by ``2**22``),
        read-only (shared between threads through the cache).

    Raises:
        ValueError: A size is not positive, or ``out_size`` exceeds ``in_size``.
    """
    if not 0 < out_size <= in_size:
        raise ValueError(f"cannot shrink {in_size} samples to {out_size}")
    scale = float(in_size) / out_size
    support = _SUPPORT * scale
    inverse = 1.0 / scale
    one = 1 << PRECISION_BITS
    matrix = np.zeros((out_size, in_size), dtype=np.float64)
    for xx in range(out_size):
        center = (xx + 0.5) * scale
        # C's (int) cast truncates toward zero, as int() does.
        xmin = max(int(center - support + 0.5), 0)
        xmax = min(int(center + support + 0.5), in_size) - xmin
        weights = [_lanczos((x + xmin - center + 0.5) * inverse) for x in range(xmax)]
        total = 0.0
        for w in weights:  # summed in order, as the C loop does
            total += w
        for x, w in enumerate(weights):
            k = w / total if total != 0.0 else w
            matrix[xx, xmin + x] = int(-0.5 + k * one) if k < 0 else int(0.5 + k * one)
    matrix.setflags(write=False)
    return matrix


def _to_8bit(sums: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    """Fixed-point sums to 8-bit values (as float64): add half, shift right, clip."""
    half, one = 1 << (PRECISION_BITS - 1), 1 << PRECISION_BITS
    out: npt.NDArray[np.float64] = np.clip(np.floor((sums + half) / one), 0, 255)
    return out


def lanczos_shrink(gray: npt.NDArray[np.uint8], side: int) -> npt.NDArray[np.uint8]:
    """The pixels of ``Image.fromarray(gray).resize((side, side), LANCZOS)``.

    Args:
        gray: uint8 (n, n), a square 8-bit grey image (Pillow's mode ``"L"``), n >= side.
        side: Output side.

    Returns:
        uint8 (side, side).

    Raises:
        ValueError: Not a square uint8 array at least ``side`` pixels wide.
    """
    if gray.ndim != 2 or gray.dtype != np.uint8 or gray.shape[0] != gray.shape[1]:
        raise ValueError(f"expected a square uint8 image, got {gray.dtype} {gray.shape}")
    n = gray.shape[0]
    if n == side:
        return gray.copy()  # Pillow returns a copy of an image already at the size
    weights = lanczos_matrix(n, side)  # raises when n < side
    rows = _to_8bit(gray.astype(np.float64) @ weights.T)  # (n, side): along rows first
    out: npt.NDArray[np.uint8] = _to_8bit(weights @ rows).astype(np.uint8)  # (side, side)
    return out
