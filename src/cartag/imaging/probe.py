"""Identify an image format and read its declared size without decoding it.

The pixel count is read from the file header by the small parsers here before
Pillow sees the bytes (see :mod:`cartag.imaging.decode` for why), together with
what the header implies about the memory a decode needs per pixel. After a
decoder failed, :func:`ends_early` tells a file cut short from a corrupt one.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from cartag.errors import DecodeError
from cartag.imaging.jpeg import JpegLayout, jpeg_layout, jpeg_size, walk_jpeg

# Peak bytes per pixel of decoding and shrinking a format Pillow can only decode
# at full size, measured (``python -m benchmarks.decode --memory``) and rounded
# up: the decoded pixels (Pillow keeps every multi-band mode at 4 bytes per
# pixel, a palette or grey image at 1), the copy the shrink converts them to,
# and the decoder's own buffer (WebP, AVIF).
_PIXEL_BYTES = {"GIF": 11.0, "WEBP": 18.5, "BMP": 10.0, "AVIF": 18.0}
# PNG by colour type: grey, RGB, palette, grey+alpha, RGBA; a tRNS chunk (a
# colour key, converted to alpha before shrinking) adds to the first three.
_PNG_PIXEL_BYTES = {0: 3.0, 2: 6.0, 3: 7.0, 4: 10.5, 6: 10.5}
_PNG_GREY16_PIXEL_BYTES = 7.0
_PNG_TRNS_PIXEL_BYTES = 8.5

# BMP info-header sizes (the field right after the 14-byte file header): OS/2
# core, OS/2 v2, Windows v1-v5. Checking it keeps text that starts with "BM"
# (say, an HTML page about a BMW) from passing for a bitmap.
_BMP_CORE_HEADER = struct.pack("<I", 12)
_BMP_HEADER_SIZES = frozenset(struct.pack("<I", n) for n in (12, 16, 40, 52, 56, 64, 108, 124))

# ISO-BMFF brands of AVIF; other brands (HEIC, MP4, ...) are not images we decode.
_AVIF_BRANDS = frozenset({b"avif", b"avis"})

# Magic numbers of image formats that are recognised but not decoded, so that
# they are reported as "unsupported" rather than "not_an_image".
_OTHER_IMAGE_MAGIC = (
    b"II*\x00",  # TIFF, little-endian
    b"MM\x00*",  # TIFF, big-endian
    b"II+\x00",  # BigTIFF
    b"MM\x00+",
    b"\x00\x00\x01\x00",  # ICO
    b"\x00\x00\x02\x00",  # CUR
    b"8BPS",  # Photoshop
    b"\xff\x4f\xff\x51",  # JPEG 2000 codestream
    b"\x00\x00\x00\x0cjP  ",  # JPEG 2000 (JP2)
    b"\xff\x0a",  # JPEG XL codestream
    b"\x00\x00\x00\x0cJXL ",  # JPEG XL container
    b"qoif",  # QOI
    b"DDS ",  # DirectDraw surface
    b"\x76\x2f\x31\x01",  # OpenEXR
    b"#?RADIANCE",  # HDR
)


@dataclass(frozen=True)
class Header:
    """What the header probe learned without decoding.

    Attributes:
        format: Pillow format name to open the bytes with.
        size: ``(width, height)`` in pixels, as declared by the header.
        truncated: The container declares more bytes than were received.
        pixel_bytes: Peak bytes per pixel of decoding it at full size (0 for JPEG).
        jpeg: The frame and scans of a JPEG (``None`` for other formats).
    """

    format: str
    size: tuple[int, int]
    truncated: bool = False
    pixel_bytes: float = 0.0
    jpeg: JpegLayout | None = None


def probe(data: bytes) -> Header:
    """Identify the format and read the declared size without decoding.

    Raises:
        DecodeError: ``not_an_image``, ``unsupported`` or ``truncated`` (the
            bytes end before the size fields).
    """
    if not data:
        raise DecodeError("the response body is empty", "not_an_image")
    if data.startswith(b"\xff\xd8\xff"):
        return Header("JPEG", jpeg_size(data), jpeg=jpeg_layout(data))
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return Header("PNG", _png_size(data), pixel_bytes=_png_pixel_bytes(data))
    if data.startswith((b"GIF87a", b"GIF89a")):
        return Header("GIF", _gif_size(data), pixel_bytes=_PIXEL_BYTES["GIF"])
    if data.startswith(b"RIFF") and data[8:12] == b"WEBP":
        size, declared = _webp_size(data)
        return Header(
            "WEBP", size, truncated=len(data) < declared, pixel_bytes=_PIXEL_BYTES["WEBP"]
        )
    if data.startswith(b"BM") and data[14:18] in _BMP_HEADER_SIZES:
        return Header("BMP", _bmp_size(data), pixel_bytes=_PIXEL_BYTES["BMP"])
    if data[4:8] == b"ftyp":
        return _probe_bmff(data)
    if data.startswith(_OTHER_IMAGE_MAGIC):
        raise DecodeError("an image format cartag does not decode", "unsupported")
    raise DecodeError(_describe_non_image(data), "not_an_image")


def _describe_non_image(data: bytes) -> str:
    head = data[:512].lstrip().lower()
    if head.startswith((b"<!doctype html", b"<html")) or b"<html" in head:
        return "the response is an HTML page, not an image"
    if b"<svg" in head:
        return "the response is an SVG drawing (vector images are not decoded)"
    return "the response is not an image in a known format"


def _need(data: bytes, end: int, what: str) -> None:
    if len(data) < end:
        raise DecodeError(f"file ends inside the {what} header", "truncated")


def _png_pixel_bytes(data: bytes) -> float:
    """Peak bytes per pixel of decoding a PNG, from its colour type and bit depth."""
    _need(data, 26, "PNG")
    depth, colour = data[24], data[25]
    if colour == 0 and depth == 16:
        base = _PNG_GREY16_PIXEL_BYTES
    else:
        base = _PNG_PIXEL_BYTES.get(colour, max(_PNG_PIXEL_BYTES.values()))
    idat = data.find(b"IDAT")
    has_key = colour in (0, 2, 3) and data.find(b"tRNS", 33, idat if idat > 0 else None) != -1
    return base + (_PNG_TRNS_PIXEL_BYTES if has_key else 0.0)


def _png_size(data: bytes) -> tuple[int, int]:
    _need(data, 24, "PNG")
    if data[12:16] != b"IHDR":
        raise DecodeError("PNG does not start with an IHDR chunk", "unsupported")
    width, height = struct.unpack_from(">II", data, 16)
    return width, height


def _gif_size(data: bytes) -> tuple[int, int]:
    """Logical screen size, grown to cover the first frame as Pillow does."""
    _need(data, 13, "GIF")
    width, height, flags = struct.unpack_from("<HHB", data, 6)
    pos = 13 + (3 << ((flags & 7) + 1) if flags & 0x80 else 0)
    while True:
        _need(data, pos + 1, "GIF")
        block = data[pos]
        if block == 0x2C:  # image descriptor of the first frame
            _need(data, pos + 9, "GIF")
            left, top, frame_w, frame_h = struct.unpack_from("<HHHH", data, pos + 1)
            return max(width, left + frame_w), max(height, top + frame_h)
        if block != 0x21:  # neither an extension: trailer or garbage before any frame
            raise DecodeError("GIF has no image frame", "unsupported")
        pos += 2  # introducer and label, then data sub-blocks up to a 0 length
        while True:
            _need(data, pos + 1, "GIF")
            if data[pos] == 0:
                pos += 1
                break
            pos += 1 + data[pos]


def _webp_size(data: bytes) -> tuple[tuple[int, int], int]:
    """Canvas size and the total file length the RIFF header declares."""
    _need(data, 30, "WebP")
    declared = 8 + struct.unpack_from("<I", data, 4)[0]
    chunk = data[12:16]
    if chunk == b"VP8 ":  # lossy: 14-bit sizes after the start code
        if data[23:26] != b"\x9d\x01\x2a":
            raise DecodeError("WebP VP8 frame header is corrupt", "unsupported")
        width, height = struct.unpack_from("<HH", data, 26)
        return (width & 0x3FFF, height & 0x3FFF), declared
    if chunk == b"VP8L":  # lossless: 14-bit (size - 1) fields after a 0x2F signature
        if data[20] != 0x2F:
            raise DecodeError("WebP VP8L header is corrupt", "unsupported")
        bits = struct.unpack_from("<I", data, 21)[0]
        return ((bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1), declared
    if chunk == b"VP8X":  # extended (alpha, animation): 24-bit (size - 1) canvas fields
        width = int.from_bytes(data[24:27], "little") + 1
        height = int.from_bytes(data[27:30], "little") + 1
        return (width, height), declared
    raise DecodeError("WebP chunk type is unknown", "unsupported")


def _bmp_size(data: bytes) -> tuple[int, int]:
    _need(data, 26, "BMP")
    if data[14:18] == _BMP_CORE_HEADER:  # 16-bit sizes
        width, height = struct.unpack_from("<HH", data, 18)
        return width, height
    # Negative height means top-down rows.
    width, height = struct.unpack_from("<ii", data, 18)
    return abs(width), abs(height)


def ends_early(data: bytes, file_format: str) -> bool:
    """Whether the file stops before its format's end marker.

    Only consulted after a decoder failed, so a missing end marker on an
    otherwise readable file is never an error.
    """
    if file_format == "JPEG":
        _, scan = walk_jpeg(data)
        # 0xFF is always escaped in entropy-coded data, so EOI cannot occur there.
        return scan is None or data.find(b"\xff\xd9", scan) == -1
    if file_format == "PNG":
        return data.rfind(b"IEND") == -1
    if file_format == "GIF":
        return not data.rstrip(b"\x00").endswith(b"\x3b")  # GIF trailer
    if file_format == "BMP":
        file_size, _, pixels_at = struct.unpack_from("<IIi", data, 2)
        return len(data) < max(int(file_size), int(pixels_at))
    if file_format == "AVIF":
        return not _avif_has_data(data)
    return False  # WebP: its RIFF length was checked before decoding


@dataclass(frozen=True)
class _Box:
    """A top-level ISO-BMFF box: payload ``data[start:end]`` (``end`` clipped to the data)."""

    kind: bytes
    start: int
    end: int
    complete: bool


def _bmff_boxes(data: bytes) -> tuple[list[_Box], bool]:
    """Split an ISO-BMFF file (AVIF, HEIC, MP4) into its top-level boxes.

    Returns:
        ``(boxes, overrun)``; ``overrun`` when the last box, or a box header,
        runs past the end of the data.

    Raises:
        DecodeError: ``unsupported`` when a box size is impossible.
    """
    boxes: list[_Box] = []
    pos = 0
    while pos < len(data):
        if len(data) < pos + 8:
            return boxes, True
        (size,) = struct.unpack_from(">I", data, pos)
        header = 8
        if size == 1:  # 64-bit size follows the type
            if len(data) < pos + 16:
                return boxes, True
            (size,) = struct.unpack_from(">Q", data, pos + 8)
            header = 16
        elif size == 0:  # box runs to the end of the file
            size = len(data) - pos
        if size < header:
            raise DecodeError("ISO-BMFF box structure is corrupt", "unsupported")
        end = pos + int(size)
        kind = data[pos + 4 : pos + 8]
        boxes.append(_Box(kind, pos + header, min(end, len(data)), end <= len(data)))
        pos = end
    return boxes, bool(boxes) and not boxes[-1].complete


def _probe_bmff(data: bytes) -> Header:
    """Probe an ISO-BMFF file; only the AVIF brands are accepted."""
    boxes, overrun = _bmff_boxes(data)
    ftyp = boxes[0] if boxes else None
    if ftyp is None or not ftyp.complete:
        raise DecodeError("file ends inside the ISO-BMFF ftyp box", "truncated")
    brands = {data[i : i + 4] for i in range(ftyp.start, ftyp.end - 3, 4)}
    if not brands & _AVIF_BRANDS:
        raise DecodeError("ISO-BMFF file that is not AVIF (HEIC or video?)", "unsupported")
    return Header(
        "AVIF",
        _avif_size(data, boxes, overrun),
        truncated=overrun,
        pixel_bytes=_PIXEL_BYTES["AVIF"],
    )


def _avif_has_data(data: bytes) -> bool:
    boxes, overrun = _bmff_boxes(data)
    return not overrun and any(box.kind == b"mdat" for box in boxes)


def _avif_size(data: bytes, boxes: list[_Box], overrun: bool) -> tuple[int, int]:
    """Largest ``ispe`` (image spatial extents) property in the ``meta`` box.

    Every item (primary image, grid tiles, alpha plane, thumbnail) has an
    ``ispe``; the largest bounds what the decoder allocates.
    """
    meta = next((box for box in boxes if box.kind == b"meta"), None)
    if meta is None:
        if overrun or len(boxes) == 1:
            raise DecodeError("AVIF file ends before its meta box", "truncated")
        raise DecodeError("AVIF has no meta box", "unsupported")
    best = (0, 0)
    at = data.find(b"ispe", meta.start, meta.end)
    while at != -1:
        # ispe box: size(4)=20, "ispe", version/flags(4), width(4), height(4)
        if at + 16 <= meta.end and struct.unpack_from(">I", data, at - 4)[0] == 20:
            width, height = struct.unpack_from(">II", data, at + 8)
            if width * height > best[0] * best[1]:
                best = (width, height)
        at = data.find(b"ispe", at + 4, meta.end)
    if best == (0, 0):
        if not meta.complete:
            raise DecodeError("AVIF file ends before its size property", "truncated")
        raise DecodeError("AVIF declares no image size", "unsupported")
    return best
