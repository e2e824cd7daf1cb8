"""How much memory a decode needs, and how much all decodes in the process may hold.

:func:`decode_bytes` estimates a decode's peak memory from what the header probe
read; :data:`IN_FLIGHT` keeps the decodes running at the same time in the
process within ``max_decode_bytes`` together (see
:func:`~cartag.imaging.decode.decode_image`).
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator

from cartag.imaging.jpeg import draft_scale
from cartag.imaging.probe import Header

# Default of decode_image's max_decode_bytes (and of CARTAG_MAX_DECODE_MB).
DEFAULT_MAX_DECODE_BYTES = 192 * 1024 * 1024
# JPEG decoded in draft mode: the scaled output and one converted copy, plus
# libjpeg's and Pillow's working buffers.
_JPEG_OUTPUT_PIXEL_BYTES = 8
_JPEG_BUFFER_BYTES = 4 * 1024 * 1024


def decode_bytes(header: Header, target_size: int) -> int:
    """Estimate the peak memory, in bytes, of decoding and shrinking the image.

    Args:
        header: What :func:`~cartag.imaging.probe.probe` read from the file.
        target_size: Size the consumer needs on the shorter side (sets the
            JPEG draft-mode scale).
    """
    width, height = header.size
    layout = header.jpeg
    if layout is None:
        return int(width * height * header.pixel_bytes)
    scale = draft_scale(width, height, target_size)
    need = _JPEG_BUFFER_BYTES + _JPEG_OUTPUT_PIXEL_BYTES * -(-width // scale) * -(-height // scale)
    if layout.buffered and layout.components:
        # Several scans: libjpeg keeps every coefficient (2 bytes) of the full
        # image, at each component's resolution, whatever the output scale.
        h_max = max(h for _, h, _ in layout.components) or 1
        v_max = max(v for _, _, v in layout.components) or 1
        for _, h, v in layout.components:
            blocks_wide = -(-width * h // (8 * h_max))
            blocks_high = -(-height * v // (8 * v_max))
            need += 128 * blocks_wide * blocks_high
    return need


class DecodeBudget:
    """The decode memory held in this process, so that concurrent decodes stay bounded.

    A decode that needs ``n`` bytes waits until the decodes running already hold
    at most ``limit - n``; one alone always starts, so nothing waits forever.
    """

    def __init__(self) -> None:
        self._held = 0
        self._changed = threading.Condition()

    @contextlib.contextmanager
    def hold(self, need: int, limit: int) -> Iterator[None]:
        """Hold ``need`` bytes of ``limit`` for the ``with`` block, waiting for room first."""
        with self._changed:
            self._changed.wait_for(lambda: self._held == 0 or self._held + need <= limit)
            self._held += need
        try:
            yield
        finally:
            with self._changed:
                self._held -= need
                self._changed.notify_all()


IN_FLIGHT = DecodeBudget()
