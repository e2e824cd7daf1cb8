"""Small synthetic photos for the dataset tests: distinct per seed, near-duplicates on demand."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image


def pattern_jpeg(
    seed: int, size: tuple[int, int] = (160, 120), quality: int = 90, bars: int = 0
) -> bytes:
    """A blocky random picture; the same seed gives the same picture.

    Args:
        seed: Which picture (different seeds have far-apart pHashes).
        size: ``(width, height)``; a different size of the same seed is a near-duplicate.
        quality: JPEG quality; another quality of the same seed is a near-duplicate.
        bars: Height of black letterbox bars added above and below (pixels).
    """
    rng = np.random.default_rng(seed)
    blocks = rng.integers(0, 256, size=(6, 8, 3), dtype=np.uint8)
    image = Image.fromarray(blocks).resize(size, Image.Resampling.BILINEAR)
    if bars:
        framed = Image.new("RGB", (size[0], size[1] + 2 * bars), (0, 0, 0))
        framed.paste(image, (0, bars))
        image = framed
    out = io.BytesIO()
    image.save(out, "JPEG", quality=quality)
    return out.getvalue()
