"""Studio photos on white, restaged on grey, dark and gradient backdrops.

The data README names "studio shots on grey" among the weak type rule's errors,
and cartag's label convention calls a vehicle shown whole on any plain or
seamless backdrop Stock. Most Stock photos in vcr-train are on white, though,
so a model trained on them alone may learn "white surroundings" as much as
"studio shot". Restaging a white-backdrop Stock photo swaps only the backdrop;
the vehicle, and the shadow it casts (carried over as shading), stay. On
vcr-train's held-out split it did not raise Stock recall (its misses there are
mostly press photos in real settings and artwork; ``benchmarks/RESULTS.md``),
so fine-tuning uses it only when asked (``--restage-stock``).

The backdrop is the near-white region connected to the image border; photos
where that region is small (no white backdrop) or covers nearly everything (a
white car whose outline leaks) are not restaged.
"""

from __future__ import annotations

from typing import Final

import numpy as np
from PIL import Image, ImageFilter

# Near-white: every channel above this, and channels within SPREAD of each other.
WHITE_MIN: Final[int] = 170
WHITE_SPREAD: Final[int] = 30
MIN_BACKDROP: Final[float] = 0.15
MAX_BACKDROP: Final[float] = 0.8
# Feathering radius (px at 256) so the vehicle's edge does not keep a white halo.
FEATHER: Final[float] = 1.2


def backdrop_mask(pixels: np.ndarray) -> np.ndarray:
    """The border-connected near-white backdrop of an image, feathered.

    Args:
        pixels: uint8 (H, W, 3) RGB.

    Returns:
        float32 (H, W) alpha in [0, 1]; 1 = backdrop.
    """
    f = pixels.astype(np.int16)
    low, high = f.min(axis=2), f.max(axis=2)
    white = (low > WHITE_MIN) & (high - low < WHITE_SPREAD)
    mask = np.zeros_like(white)
    mask[0], mask[-1], mask[:, 0], mask[:, -1] = white[0], white[-1], white[:, 0], white[:, -1]
    # Geodesic dilation inside the white pixels until nothing changes: a flood fill
    # from the border, in whole-array steps.
    while True:
        grown = mask.copy()
        grown[1:] |= mask[:-1]
        grown[:-1] |= mask[1:]
        grown[:, 1:] |= mask[:, :-1]
        grown[:, :-1] |= mask[:, 1:]
        grown &= white
        if np.array_equal(grown, mask):
            break
        mask = grown
    soft = Image.fromarray(mask.astype(np.uint8) * 255).filter(ImageFilter.GaussianBlur(FEATHER))
    return np.asarray(soft, dtype=np.float32) / 255.0


def restageable(alpha: np.ndarray) -> bool:
    """Whether a backdrop mask is a real white backdrop (not absent, not leaked)."""
    share = float(alpha.mean())
    return MIN_BACKDROP <= share <= MAX_BACKDROP


def random_backdrop(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """A studio-like backdrop: flat, a vertical gradient, a vignette or a wall and floor.

    Returns:
        float32 (height, width, 3) in [0, 255].
    """
    kind = int(rng.integers(0, 4))
    base = rng.uniform(15, 200)
    ys = np.linspace(0.0, 1.0, height, dtype=np.float32)[:, None]
    xs = np.linspace(-1.0, 1.0, width, dtype=np.float32)[None, :]
    level: np.ndarray
    if kind == 0:
        level = np.full((height, width), base, dtype=np.float32)
    elif kind == 1:
        other = rng.uniform(15, 220)
        level = np.broadcast_to(base + (other - base) * ys, (height, width))
    elif kind == 2:
        radius = np.sqrt(xs**2 + ((ys - 0.5) * 2) ** 2)
        level = base * (1.25 - 0.5 * radius)
    else:
        horizon, floor = rng.uniform(0.45, 0.75), rng.uniform(15, 200)
        level = np.broadcast_to(np.where(ys < horizon, base, floor), (height, width))
    tint = rng.normal(0.0, 8.0, size=3) if rng.random() < 0.5 else np.zeros(3)
    noise = rng.normal(0.0, 2.0, size=(height, width, 3))
    return np.clip(level[..., None] + tint + noise, 0, 255).astype(np.float32)


def restage(pixels: np.ndarray, alpha: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """``pixels`` with its backdrop (``alpha``) replaced by a random one.

    Args:
        pixels: uint8 (H, W, 3) RGB.
        alpha: float32 (H, W) from :func:`backdrop_mask`.

    Returns:
        uint8 (H, W, 3).
    """
    f = pixels.astype(np.float32)
    # A shadow on the white floor is darker than white: keep it as shading.
    shade = np.clip(f.mean(axis=2, keepdims=True) / 245.0, 0.0, 1.05)
    backdrop = random_backdrop(rng, *pixels.shape[:2]) * shade
    a = alpha[..., None]
    out: np.ndarray = np.clip(f * (1 - a) + backdrop * a, 0, 255).astype(np.uint8)
    return out
