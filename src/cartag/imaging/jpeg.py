"""Read a JPEG's marker structure without decoding it, and catch scans cut short.

The probe (:mod:`cartag.imaging.probe`) takes the frame size from here, the
memory estimate (:mod:`cartag.imaging.limits`) the frame's sampling factors and
whether the file is progressive, and the decoder (:mod:`cartag.imaging.decode`)
asks :func:`jpeg_cut_short` whether libjpeg ran out of scan data and filled the
rest of the picture with grey.
"""

from __future__ import annotations

import io
import re
import struct
from dataclasses import dataclass

from PIL import Image

from cartag.errors import DecodeError

# JPEG start-of-frame markers: SOF0-SOF15 except DHT (C4), JPG (C8) and DAC (CC).
_JPEG_SOF = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
# Markers that stand alone, without a length field: TEM, RST0-7, SOI.
_JPEG_STANDALONE = frozenset({0x01, 0xD8, *range(0xD0, 0xD8)})
# Start-of-frame markers of progressive JPEGs (SOF2, SOF6, SOF10, SOF14).
_JPEG_PROGRESSIVE = frozenset({0xC2, 0xC6, 0xCA, 0xCE})
# Where entropy-coded data ends: 0xFF followed by anything but a stuffed zero,
# a restart marker or another fill byte. A regular expression skips a scan at
# C speed.
_JPEG_MARKER_AFTER_SCAN = re.compile(rb"\xff[^\x00\xd0-\xd7\xff]")
# Inserted after a JPEG's last scan to see whether libjpeg reads past it (see
# jpeg_cut_short): varied, so that Huffman-decoding it yields coefficients,
# and free of 0xFF, so that it holds no marker.
_JPEG_PROBE_PAD = bytes((i * 149 + 7) % 255 for i in range(1024))
# Pixel value of a block without coefficients (what libjpeg substitutes for
# missing scan data) in the modes Pillow loads JPEGs in; Adobe CMYK is inverted.
JPEG_EMPTY_BLOCK = frozenset({128, (128, 128, 128), (127, 127, 127, 127), (128, 128, 128, 128)})
_ALL_COEFFICIENTS = (1 << 64) - 1


@dataclass(frozen=True)
class JpegScan:
    """One start-of-scan header: component ids, spectral range, approximation bits."""

    components: tuple[int, ...]
    start: int
    end: int
    low_bit: int


@dataclass(frozen=True)
class JpegLayout:
    """Frame and scans of a JPEG's first picture, read without decoding.

    Attributes:
        components: ``(id, horizontal, vertical)`` sampling factors per component.
        progressive: A progressive frame (SOF2/6/10/14).
        scans: The start-of-scan headers, in file order.
        scan_ends: Offset of the marker that ends each scan's data (the last
            one normally the end-of-image marker); one fewer than ``scans``
            when the data ends inside the last scan.
    """

    components: tuple[tuple[int, int, int], ...]
    progressive: bool
    scans: tuple[JpegScan, ...]
    scan_ends: tuple[int, ...]

    @property
    def buffered(self) -> bool:
        """Whether libjpeg keeps the coefficients of the whole image (several scans)."""
        return self.progressive or (
            bool(self.scans) and len(self.scans[0].components) < len(self.components)
        )


def walk_jpeg(data: bytes) -> tuple[tuple[int, int] | None, int | None]:
    """Walk the JPEG marker segments up to the first start-of-scan.

    Returns:
        ``(size, scan)``: ``(width, height)`` from the start-of-frame header and
        the offset where entropy-coded data begins; each is ``None`` if the
        data ends before it.

    Raises:
        DecodeError: ``unsupported`` when the marker structure is corrupt.
    """
    size: tuple[int, int] | None = None
    pos = 2
    while pos + 2 <= len(data):
        if data[pos] != 0xFF:
            raise DecodeError("JPEG marker structure is corrupt", "unsupported")
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte before a marker
            pos += 1
            continue
        if marker in _JPEG_STANDALONE:
            pos += 2
            continue
        if marker == 0xD9 or (marker == 0xDA and size is None):
            raise DecodeError("JPEG has no frame header or no scan", "unsupported")
        if pos + 4 > len(data):
            break
        (length,) = struct.unpack_from(">H", data, pos + 2)
        if length < 2:
            raise DecodeError("JPEG segment length is corrupt", "unsupported")
        if marker in _JPEG_SOF and size is None and pos + 9 <= len(data):
            height, width = struct.unpack_from(">HH", data, pos + 5)
            size = (width, height)
        if marker == 0xDA:
            scan = pos + 2 + length
            return size, (scan if scan <= len(data) else None)
        pos += 2 + length
    return size, None


def jpeg_size(data: bytes) -> tuple[int, int]:
    """``(width, height)`` from the start-of-frame header; ``truncated`` if the data ends first."""
    size, _ = walk_jpeg(data)
    if size is None:
        raise DecodeError("file ends inside the JPEG header", "truncated")
    return size


def jpeg_layout(data: bytes) -> JpegLayout:
    """Read the frame and every scan header of the first picture (after :func:`jpeg_size`).

    Entropy-coded data is skipped, not decoded. A picture that ends early
    just yields fewer scans; the decoder reports it.
    """
    components: tuple[tuple[int, int, int], ...] = ()
    progressive = False
    scans: list[JpegScan] = []
    scan_ends: list[int] = []
    pos = 2
    while pos + 4 <= len(data):
        if data[pos] != 0xFF or data[pos + 1] == 0xFF:
            pos += 1  # a fill byte, or junk that libjpeg skips with a warning
            continue
        marker = data[pos + 1]
        if marker in _JPEG_STANDALONE:
            pos += 2
            continue
        if marker == 0xD9:  # end of image: the rest is another picture (MPO) or junk
            break
        (length,) = struct.unpack_from(">H", data, pos + 2)
        segment = data[pos + 4 : pos + 2 + length]
        if marker in _JPEG_SOF and not components and len(segment) >= 6:
            count = segment[5]
            components = tuple(
                (segment[i], segment[i + 1] >> 4, segment[i + 1] & 0x0F)
                for i in range(6, min(len(segment) - 2, 6 + 3 * count), 3)
            )
            progressive = marker in _JPEG_PROGRESSIVE
        if marker == 0xDA:
            count = segment[0] if segment else 0
            if len(segment) < 4 + 2 * count:
                break
            start, end, bits = segment[1 + 2 * count : 4 + 2 * count]
            scans.append(JpegScan(tuple(segment[1 : 1 + 2 * count : 2]), start, end, bits & 0x0F))
            found = _JPEG_MARKER_AFTER_SCAN.search(data, pos + 2 + length)
            if found is None:
                break
            pos = found.start()
            scan_ends.append(pos)
            continue
        pos += 2 + length
    return JpegLayout(components, progressive, tuple(scans), tuple(scan_ends))


def draft_scale(width: int, height: int, target_size: int) -> int:
    """The reduction JpegImageFile.draft picks for a ``target_size`` square request."""
    fits = min(width // target_size, height // target_size)
    return next(scale for scale in (8, 4, 2, 1) if fits >= scale or scale == 1)


def scans_complete(layout: JpegLayout) -> bool:
    """Whether the scans send every coefficient of every component to full precision."""
    ids = {component for component, _, _ in layout.components}
    if not layout.progressive:
        return ids <= {c for scan in layout.scans for c in scan.components}
    done = dict.fromkeys(ids, 0)
    for scan in layout.scans:
        if scan.low_bit == 0 and scan.start <= scan.end <= 63:
            band = ((1 << (scan.end + 1)) - 1) ^ ((1 << scan.start) - 1)
            for component in scan.components:
                if component in done:
                    done[component] |= band
    return all(bits == _ALL_COEFFICIENTS for bits in done.values())


def jpeg_cut_short(data: bytes, layout: JpegLayout, loaded: Image.Image, target_size: int) -> bool:
    """Whether libjpeg ran out of scan data while decoding ``loaded`` from ``data``.

    Where the entropy-coded data stops early, libjpeg warns (Pillow hides the
    warning) and leaves the remaining blocks without coefficients: the image
    ends in uniform mid-grey. The suspects, a bottom-right pixel of exactly
    that grey or scans missing from a progressive JPEG, are decoded again with
    bytes inserted after every scan: a complete scan never reaches them, a
    scan cut short decodes them and the pixels change. So a real photo whose
    corner happens to be mid-grey costs a second decode but is not refused.
    """
    if not layout.scans or len(layout.scan_ends) < len(layout.scans):
        return False  # no end marker: the decoder already failed or will
    corner = loaded.getpixel((loaded.width - 1, loaded.height - 1))
    if corner not in JPEG_EMPTY_BLOCK and scans_complete(layout):
        return False
    pieces = []
    start = 0
    for end in layout.scan_ends:
        pieces += [data[start:end], _JPEG_PROBE_PAD]
        start = end
    padded = b"".join([*pieces, data[start:]])
    with Image.open(io.BytesIO(padded), formats=["JPEG"]) as again:
        again.draft("RGB", (target_size, target_size))
        again.load()
        return again.size != loaded.size or again.tobytes() != loaded.tobytes()
