"""Training photos for the colors vcr-train lacks (Orange, Burgundy, Purple), by recoloring.

cartag's vocabulary has twelve colors; vcr-train has photos of nine. A head
with no examples of a color can never answer it, and orange, burgundy and
purple cars do get listed. :func:`recolor` repaints a car's body in one of the
missing colors: in HSV, pixels whose hue is near the source color's and that are
saturated and not black get the target's hue (keeping a damped share of their
hue variation), a saturation scaled so the body's mean matches the target's, and
their value scaled (darker for Burgundy). Everything else (glass, chrome, tyres,
white highlights, the background) is kept, and the change fades in over a band
of hue and saturation so no hard edge appears.

The sources are chosen so the hue move is short and the result looks like a
paint job rather than a filter: Orange from red and yellow cars, Burgundy from
red ones, Purple from blue, red and pink ones.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Final

import numpy as np
from PIL import Image


@dataclass(frozen=True)
class Source:
    """Which pixels are the body of a car of one color.

    Attributes:
        hue: Centre hue, degrees.
        width: Hues within this many degrees of the centre count (fading out over
            the last 30 %).
    """

    hue: float
    width: float


@dataclass(frozen=True)
class Target:
    """What a recolored body looks like: ranges drawn per image.

    Attributes:
        hue: Body hue, degrees (low, high); may wrap past 360.
        saturation: The body's mean saturation, 0-1.
        value: Factor on each pixel's value (brightness).
        sources: Colors of the photos it is made from.
    """

    hue: tuple[float, float]
    saturation: tuple[float, float]
    value: tuple[float, float]
    sources: tuple[str, ...]


SOURCES: Final[dict[str, Source]] = {
    "Red": Source(0, 22),
    "Blue": Source(220, 35),
    "Yellow": Source(52, 16),
    "Pink": Source(330, 25),
}
TARGETS: Final[dict[str, Target]] = {
    "Orange": Target((18, 32), (0.75, 1.0), (0.95, 1.1), ("Red", "Yellow")),
    "Burgundy": Target((335, 352), (0.6, 0.9), (0.38, 0.55), ("Red",)),
    "Purple": Target((265, 290), (0.45, 0.8), (0.55, 0.85), ("Blue", "Red", "Pink")),
}
# Recolored training photos per missing color (bundled build and sweeps): about as
# many as vcr-train's rarest real colors have (Green 124, Brown 136 in its training split).
RECOLORED_PER_COLOR: Final[int] = 150
# A photo whose body covers less than this share of the image is skipped.
MIN_BODY: Final[float] = 0.03
# Only this share of a pixel's hue offset from the source centre is kept.
HUE_SPREAD: Final[float] = 0.3


def _hue_offset(hue: np.ndarray, centre: float) -> np.ndarray:
    """Signed distance in degrees from ``centre``, in [-180, 180)."""
    out: np.ndarray = (hue - centre + 180.0) % 360.0 - 180.0
    return out


def body_weight(hsv: np.ndarray, source: Source) -> np.ndarray:
    """How much each pixel belongs to a body of the source color.

    Args:
        hsv: float32 (H, W, 3) hue, saturation, value, each in [0, 1].
        source: The body's color.

    Returns:
        float32 (H, W) in [0, 1].
    """
    distance = np.abs(_hue_offset(hsv[..., 0] * 360.0, source.hue))
    weight = np.clip((source.width - distance) / (source.width * 0.3), 0, 1)
    weight *= np.clip((hsv[..., 1] - 0.25) / 0.15, 0, 1)  # grey, white, chrome: not body
    weight *= np.clip((hsv[..., 2] - 0.08) / 0.07, 0, 1)  # near-black: tyres, shadows
    out: np.ndarray = weight.astype(np.float32)
    return out


def recolor(
    image: Image.Image, source: str, target: str, rng: np.random.Generator
) -> Image.Image | None:
    """``image`` with its ``source``-colored body repainted in ``target``.

    Args:
        image: A photo of a car of color ``source`` (a key of :data:`SOURCES`).
        source: The car's color.
        target: A key of :data:`TARGETS`.
        rng: Draws the target's hue, saturation and value.

    Returns:
        The RGB image, or None when under :data:`MIN_BODY` of it is body.

    Raises:
        KeyError: ``source`` or ``target`` is not known.
    """
    src, dst = SOURCES[source], TARGETS[target]
    image = image.convert("RGB")
    rgb = np.asarray(image, dtype=np.float32)
    hsv = np.asarray(image.convert("HSV"), dtype=np.float32) / 255.0
    weight = body_weight(hsv, src)
    if float(weight.mean()) < MIN_BODY:
        return None
    offset = _hue_offset(hsv[..., 0] * 360.0, src.hue)
    hue = (rng.uniform(*dst.hue) + HUE_SPREAD * offset) % 360.0
    body_saturation = float(np.average(hsv[..., 1], weights=weight))
    saturation = hsv[..., 1] * rng.uniform(*dst.saturation) / max(0.5, body_saturation)
    value = hsv[..., 2] * rng.uniform(*dst.value)
    painted = np.stack([hue / 360.0, np.clip(saturation, 0, 1), np.clip(value, 0, 1)], axis=-1)
    hsv_bytes = np.round(painted * 255).astype(np.uint8)
    repainted = np.asarray(Image.fromarray(hsv_bytes, "HSV").convert("RGB"), dtype=np.float32)
    # Blended in RGB: blending hues would take the long way round the circle.
    w = weight[..., None]
    return Image.fromarray(np.clip(rgb * (1 - w) + repainted * w, 0, 255).astype(np.uint8))


@dataclass(frozen=True)
class Recolored:
    """One synthetic photo.

    Attributes:
        image: The recolored RGB image.
        color: Its label (a key of :data:`TARGETS`).
        source: Index of the photo it was made from, in the ``colors`` passed to
            :func:`synthesize`.
    """

    image: Image.Image
    color: str
    source: int


def missing_targets(colors: Iterable[str], min_real: int = 1) -> list[str]:
    """The target colors (in :data:`TARGETS` order) with fewer than ``min_real`` photos.

    Real photos beat repainted ones: by default (``min_real=1``) a color with any
    real training photo is not made. A larger ``min_real`` is an explicit top-up
    of rare colors (recorded in the model's config, and measured).

    Raises:
        ValueError: ``min_real`` is below 1.
    """
    if min_real < 1:
        raise ValueError(f"min_real must be 1 or more, not {min_real}")
    counts = Counter(colors)
    return [color for color in TARGETS if counts[color] < min_real]


def synthesize(
    colors: Sequence[str],
    load: Callable[[int], Image.Image],
    per_color: int,
    seed: int,
    targets: Sequence[str] | None = None,
) -> list[Recolored]:
    """Up to ``per_color`` recolored photos of each target color.

    Sources are drawn in a seeded random order; a photo with too little body is
    skipped. Pass only training photos: a recolored held-out photo in training
    would leak that photo's scene.

    Args:
        colors: The color label of each candidate photo.
        load: Opens candidate photo ``i``.
        per_color: Photos to make per target color.
        seed: Seed of the source order and of the colors drawn.
        targets: Target colors to make (default: every key of :data:`TARGETS`).

    Returns:
        Recolored photos, grouped by target color in :data:`TARGETS` order.
    """
    rng = np.random.default_rng(seed)
    made: list[Recolored] = []
    wanted = TARGETS.keys() if targets is None else set(targets)
    for target, spec in TARGETS.items():
        if target not in wanted:
            continue
        candidates = [i for i, color in enumerate(colors) if color in spec.sources]
        count = 0
        for index in rng.permutation(len(candidates)):
            if count >= per_color:
                break
            source = candidates[int(index)]
            painted = recolor(load(source), colors[source], target, rng)
            if painted is not None:
                made.append(Recolored(painted, target, source))
                count += 1
    return made
