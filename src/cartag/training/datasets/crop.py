"""The optional crop step of dataset building: pluggable, default trims letterboxing.

A :class:`Cropper` looks at a decoded image and says which box to keep (or
None: keep it whole). The builder cuts that box out of the original bytes and
stores the result as a new blob; the item's provenance keeps the original.

:class:`LetterboxCropper` (the default, ``letterbox``) trims uniform bars at the
edges: rows (columns) across the whole width (height) whose pixels all lie
within a tolerance of the bar's color, in centred pairs (top and bottom, or left
and right; the thinner at least half the thicker). A one-sided dark margin is
studio background, not letterboxing: on the 2,883 vcr-train photos, one-sided
trimming cut into 17 images (mostly dark studio shots), paired trimming into 1
(a real pillarbox). It leaves near-white margins alone by default, because
white studio margins are exactly what tells a Stock render from a Dealer photo
(see :meth:`cartag.models.backbone.Backbone.preprocess`), and it never trims
more than ``max_trim`` of a side, so a flat Placeholder card is not cut down to
nothing. ``none`` (:class:`NoCropper`) keeps every image whole.
"""

from __future__ import annotations

import abc
import io
from typing import Any, Final

import numpy as np
from PIL import Image, ImageOps

from cartag.training.datasets.filters import Checked

Box = tuple[int, int, int, int]  # left, top, right, bottom (PIL convention, exclusive)

CROPPERS: Final[tuple[str, ...]] = ("letterbox", "none")


class Cropper(abc.ABC):
    """Decides which part of an image a dataset keeps.

    Attributes:
        name: Recorded in the item's provenance (``crop.method``).
    """

    name: str = "cropper"

    @abc.abstractmethod
    def box(self, image: Image.Image) -> Box | None:
        """The box to keep, in ``image``'s pixel coordinates; None keeps it whole."""


class NoCropper(Cropper):
    """Keeps every image whole."""

    name = "none"

    def box(self, image: Image.Image) -> Box | None:
        return None


class LetterboxCropper(Cropper):
    """Trims uniform bars (letterboxing, pillarboxing, flat borders).

    Args:
        tolerance: Largest per-channel difference (0-255) from the bar color that
            still counts as bar.
        min_bar: A bar thinner than this fraction of its side is left (noise, JPEG edges).
        max_trim: Never remove more than this fraction of a side in total.
        keep_white: Leave near-white bars (studio margins: a Stock cue).
        symmetric: Trim only centred pairs of bars (letterboxing / pillarboxing).
    """

    name = "letterbox"

    def __init__(
        self,
        *,
        tolerance: int = 12,
        min_bar: float = 0.03,
        max_trim: float = 0.4,
        keep_white: bool = True,
        symmetric: bool = True,
    ) -> None:
        if not 0 <= tolerance <= 255 or not 0 < max_trim < 1 or not 0 <= min_bar < max_trim:
            raise ValueError("need 0<=tolerance<=255 and 0<=min_bar<max_trim<1")
        self.tolerance = tolerance
        self.min_bar = min_bar
        self.max_trim = max_trim
        self.keep_white = keep_white
        self.symmetric = symmetric

    def box(self, image: Image.Image) -> Box | None:
        """See the class docstring; works on the RGB pixels, shape (H, W, 3)."""
        pixels = np.asarray(image.convert("RGB"), dtype=np.int16)
        height, width = pixels.shape[:2]
        top = self._bar(pixels)
        bottom = self._bar(pixels[::-1])
        left = self._bar(pixels.transpose(1, 0, 2))
        right = self._bar(pixels.transpose(1, 0, 2)[::-1])
        top, bottom = self._limit(top, bottom, height)
        left, right = self._limit(left, right, width)
        if not (top or bottom or left or right):
            return None
        return (left, top, width - right, height - bottom)

    def _bar(self, pixels: np.ndarray) -> int:
        """Rows of uniform color at the start of ``pixels`` (H, W, 3)."""
        color = np.median(pixels[0], axis=0)  # (3,)
        if self.keep_white and color.min() >= 225 and np.ptp(color) <= 20:
            return 0
        uniform = (np.abs(pixels - color).max(axis=2) <= self.tolerance).all(axis=1)  # (H,)
        if uniform.all():
            return 0  # the whole image is flat: nothing to keep inside it
        return int(np.argmin(uniform))  # index of the first non-uniform row

    def _limit(self, start: int, end: int, side: int) -> tuple[int, int]:
        start = start if start >= self.min_bar * side else 0
        end = end if end >= self.min_bar * side else 0
        if start + end > self.max_trim * side:
            return 0, 0
        if self.symmetric and min(start, end) < 0.5 * max(start, end):
            return 0, 0
        return start, end


def make_cropper(name: str) -> Cropper:
    """The cropper called ``name`` (one of :data:`CROPPERS`).

    Raises:
        ValueError: Unknown name.
    """
    if name == "letterbox":
        return LetterboxCropper()
    if name == "none":
        return NoCropper()
    raise ValueError(f"unknown crop method {name!r}; use one of {', '.join(CROPPERS)}")


def crop_checked(checked: Checked, cropper: Cropper) -> tuple[bytes, dict[str, Any] | None]:
    """The bytes a build stores for a new image, and the crop record (None: kept whole).

    The box is found on the decoded (possibly shrunk) image and cut from the original
    bytes; Placeholders and unreadable images are kept whole.
    """
    data = checked.candidate.data
    decoded = checked.decoded
    if decoded is None or checked.candidate.image_type == "Placeholder":
        return data, None
    box = cropper.box(decoded.image)
    if box is None:
        return data, None
    # The box was found on the decoded (possibly shrunk) image: scale it up.
    sx = decoded.width / decoded.image.width
    sy = decoded.height / decoded.image.height
    full = (round(box[0] * sx), round(box[1] * sy), round(box[2] * sx), round(box[3] * sy))
    with Image.open(io.BytesIO(data)) as src:
        image = ImageOps.exif_transpose(src).convert("RGB").crop(full)
    out = io.BytesIO()
    image.save(out, "JPEG", quality=95)
    return out.getvalue(), {"method": cropper.name, "box": list(full)}
