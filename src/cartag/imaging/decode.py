"""Turn downloaded bytes into a small RGB image, or a :class:`DecodeError` saying why not.

The bytes come from arbitrary web servers, so decoding is defensive:

* Only web image formats are decoded (JPEG/MPO, PNG/APNG, GIF, WebP, BMP,
  AVIF). Pillow can open many more, some through external programs
  (Ghostscript for EPS); anything else that looks like an image is
  ``unsupported``.
* The pixel count is read from the file header by the small parsers below
  *before* Pillow sees the bytes. Pillow runs its own decompression-bomb check
  inside ``Image.open`` and reports it with a *warning*; silencing that
  warning needs ``warnings.catch_warnings``, which is not thread-safe, and
  changing ``Image.MAX_IMAGE_PIXELS`` would change every other user of Pillow
  in the process. Rejecting the file before ``Image.open`` avoids both.
* Truncated files are errors (``LOAD_TRUNCATED_IMAGES`` stays off): a
  half-grey photo must not be classified. libjpeg does not fail on a JPEG cut
  short that still ends with an end-of-image marker (or whose header declares
  more rows than its scan holds): it warns, silently in Pillow, and fills the
  rest with grey. Such files are caught by :func:`_jpeg_cut_short`.
* Decoding memory is bounded. JPEGs are decoded at reduced size (draft mode);
  other formats, and progressive JPEGs (libjpeg keeps every coefficient of the
  full image), cannot be, so the memory a decode needs is estimated from the
  header and a file needing more than ``max_decode_bytes`` is refused as
  ``too_many_pixels``. Decodes running at the same time in the process hold at
  most ``max_decode_bytes`` together: one that does not fit waits (see
  :class:`_DecodeBudget`). Big images are shrunk before their colours are
  converted, so the working set stays close to the decoded pixels.
* Pillow still reports corrupt EXIF metadata with a ``UserWarning`` while
  opening the file. Normally it is printed and the image is used; where
  warnings are errors (the test suite) the file is ``unsupported``.

:func:`decode_image` keeps no state between calls, apart from the process-wide
count of decode memory in use, and is safe to run from many threads at once.
"""

from __future__ import annotations

import contextlib
import io
import re
import struct
import threading
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
from PIL import ExifTags, Image

from cartag.errors import DecodeError

# Formats decode_image accepts, as Pillow names them.
SUPPORTED_FORMATS = ("JPEG", "PNG", "GIF", "WEBP", "BMP", "AVIF")

# Modes that carry an alpha channel (premultiplied ones included).
_ALPHA_MODES = frozenset({"RGBA", "LA", "PA", "RGBa", "La"})
_SIXTEEN_BIT_MODES = frozenset({"I;16", "I;16L", "I;16B", "I;16N"})

_WHITE_RGBA = (255, 255, 255, 255)
# Rows of a high-bit-depth grey image converted at a time (bounds the float copy).
_GRAY_BAND_ROWS = 256

# EXIF orientation values 2..8 need a flip and/or rotation (as in
# ImageOps.exif_transpose); 1 is upright. 5..8 swap width and height.
_TRANSPOSE = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}
_SWAPS_SIDES = frozenset({5, 6, 7, 8})

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
# _jpeg_cut_short): varied, so that Huffman-decoding it yields coefficients,
# and free of 0xFF, so that it holds no marker.
_JPEG_PROBE_PAD = bytes((i * 149 + 7) % 255 for i in range(1024))
# Pixel value of a block without coefficients (what libjpeg substitutes for
# missing scan data) in the modes Pillow loads JPEGs in; Adobe CMYK is inverted.
_JPEG_EMPTY_BLOCK = frozenset({128, (128, 128, 128), (127, 127, 127, 127), (128, 128, 128, 128)})
_ALL_COEFFICIENTS = (1 << 64) - 1

# Default of decode_image's max_decode_bytes (and of CARTAG_MAX_DECODE_MB).
DEFAULT_MAX_DECODE_BYTES = 192 * 1024 * 1024
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
# JPEG decoded in draft mode: the scaled output and one converted copy, plus
# libjpeg's and Pillow's working buffers.
_JPEG_OUTPUT_PIXEL_BYTES = 8
_JPEG_BUFFER_BYTES = 4 * 1024 * 1024

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
class DecodedImage:
    """A decoded image, ready for the model and the perceptual hash.

    Attributes:
        image: Mode ``"RGB"``; aspect ratio kept; longer side at most
            ``2 * target_size`` (smaller images are not enlarged). Alpha has
            been composited onto white.
        width: Width of the original image in pixels, after EXIF orientation.
        height: Height of the original image in pixels, after EXIF orientation.
        format: One of :data:`SUPPORTED_FORMATS`: ``"JPEG"`` (multi-picture
            MPO files from phone cameras included), ``"PNG"`` (APNG
            included), ``"GIF"``, ``"WEBP"``, ``"BMP"`` or ``"AVIF"``.
    """

    image: Image.Image
    width: int
    height: int
    format: str


@dataclass(frozen=True)
class _Header:
    """What the header probe learned without decoding.

    Attributes:
        format: Pillow format name to open the bytes with.
        size: ``(width, height)`` in pixels, as declared by the header.
        truncated: The container declares more bytes than were received.
    """

    format: str
    size: tuple[int, int]
    truncated: bool = False
    pixel_bytes: float = 0.0
    jpeg: _JpegLayout | None = None


@dataclass(frozen=True)
class _JpegScan:
    """One start-of-scan header: component ids, spectral range, approximation bits."""

    components: tuple[int, ...]
    start: int
    end: int
    low_bit: int


@dataclass(frozen=True)
class _JpegLayout:
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
    scans: tuple[_JpegScan, ...]
    scan_ends: tuple[int, ...]

    @property
    def buffered(self) -> bool:
        """Whether libjpeg keeps the coefficients of the whole image (several scans)."""
        return self.progressive or (
            bool(self.scans) and len(self.scans[0].components) < len(self.components)
        )


class _DecodeBudget:
    """The decode memory held in this process, so that concurrent decodes stay bounded.

    A decode that needs ``n`` bytes waits until the decodes running already hold
    at most ``limit - n``; one alone always starts, so nothing waits forever.
    """

    def __init__(self) -> None:
        self._held = 0
        self._changed = threading.Condition()

    @contextlib.contextmanager
    def hold(self, need: int, limit: int) -> Iterator[None]:
        with self._changed:
            self._changed.wait_for(lambda: self._held == 0 or self._held + need <= limit)
            self._held += need
        try:
            yield
        finally:
            with self._changed:
                self._held -= need
                self._changed.notify_all()


_IN_FLIGHT = _DecodeBudget()


def decode_image(
    data: bytes,
    *,
    max_pixels: int,
    target_size: int = 320,
    max_decode_bytes: int = DEFAULT_MAX_DECODE_BYTES,
) -> DecodedImage:
    """Decode image bytes into a small RGB image.

    Steps: probe the header and refuse more than ``max_pixels``, or an image
    whose decode would need more than ``max_decode_bytes``; wait until the
    decodes already running leave room for this one; open with Pillow; for
    JPEG, let libjpeg decode at 1/2, 1/4 or 1/8 scale (draft mode) while
    keeping the shorter side >= ``target_size``, and check that it did not run
    out of scan data; take the first frame of an animation; shrink so the
    longer side is <= ``2 * target_size``; convert to RGB, compositing
    transparency onto white as a browser would show it; apply the EXIF
    orientation.

    Args:
        data: The complete file as downloaded.
        max_pixels: Largest ``width * height`` accepted (decompression-bomb
            guard). Capped at Pillow's own ``Image.MAX_IMAGE_PIXELS`` so that
            Pillow never warns about an image accepted here.
        target_size: Size the consumer needs on the shorter side; must be > 0.
        max_decode_bytes: Most memory one decode may need (estimated from the
            header), and most that all decodes running in the process may
            hold together; a decode that would push the total over it waits.

    Returns:
        The decoded image and the original dimensions.

    Raises:
        DecodeError: ``reason`` is ``"not_an_image"`` (empty, text, HTML, SVG,
            unknown bytes), ``"truncated"`` (the file ends early, or a JPEG's
            scan ends before its last rows), ``"too_many_pixels"`` (over
            ``max_pixels``, or its decode would need over ``max_decode_bytes``)
            or ``"unsupported"`` (another image format, or data Pillow cannot
            decode).
        ValueError: ``max_pixels``, ``target_size`` or ``max_decode_bytes`` is
            not positive.
    """
    if max_pixels <= 0 or target_size <= 0 or max_decode_bytes <= 0:
        raise ValueError("max_pixels, target_size and max_decode_bytes must be positive")
    limit = max_pixels
    if Image.MAX_IMAGE_PIXELS is not None:
        limit = min(limit, Image.MAX_IMAGE_PIXELS)

    header = _probe(data)
    width, height = header.size
    if width <= 0 or height <= 0:
        raise DecodeError(
            f"{header.format} header declares a {width}x{height} image", "unsupported"
        )
    if width * height > limit:
        raise DecodeError(
            f"image is {width}x{height} = {width * height} pixels, more than the "
            f"limit of {limit} (CARTAG_MAX_IMAGE_PIXELS, capped at Pillow's "
            "Image.MAX_IMAGE_PIXELS)",
            "too_many_pixels",
        )
    if header.truncated:
        raise DecodeError(f"{header.format} file is shorter than its header declares", "truncated")
    need = _decode_bytes(header, target_size)
    if need > max_decode_bytes:
        mib = 1024 * 1024
        raise DecodeError(
            f"decoding this {width}x{height} {header.format} needs about {-(-need // mib)} MiB, "
            f"more than the limit of {max_decode_bytes // mib} MiB (CARTAG_MAX_DECODE_MB); "
            "only baseline JPEGs are decoded at reduced size",
            "too_many_pixels",
        )

    try:
        with _IN_FLIGHT.hold(need, max_decode_bytes):
            return _decode(data, header, limit, target_size)
    except DecodeError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        # Only reachable if a plugin finds a larger size than the header probe
        # (the warning arrives as an exception only under warnings-as-errors).
        raise DecodeError(str(exc), "too_many_pixels") from exc
    except Exception as exc:
        # Decoders raise OSError, SyntaxError, ValueError, EOFError,
        # struct.error, ... on bad data; any of them only skips this one image.
        # Pillow says "image file is truncated" / "Truncated File Read" when
        # the data runs out mid-decode, libavif "Truncated data"; a cut inside
        # the headers gives vaguer errors, so the container is checked too.
        truncated = "truncated" in str(exc).lower() or _ends_early(data, header.format)
        raise DecodeError(
            f"cannot decode {header.format}: {exc}", "truncated" if truncated else "unsupported"
        ) from exc


def _decode(data: bytes, header: _Header, limit: int, target_size: int) -> DecodedImage:
    """Open, load and normalise the image; errors propagate to :func:`decode_image`."""
    with Image.open(io.BytesIO(data), formats=[header.format]) as src:
        # Pillow calls a JPEG with extra pictures appended (phone cameras) MPO.
        file_format = header.format
        orig_width, orig_height = src.size
        if orig_width * orig_height > limit:
            raise DecodeError(
                f"image is {orig_width}x{orig_height} pixels, more than the limit of {limit}",
                "too_many_pixels",
            )
        if file_format == "JPEG":
            # libjpeg scales by 1/2, 1/4 or 1/8 while decoding, keeping both
            # sides >= target_size: far less work than decoding then resizing.
            src.draft("RGB", (target_size, target_size))
        # Animated GIF/WebP/APNG: a freshly opened file is positioned on frame 0.
        src.load()
        if header.jpeg is not None and _jpeg_cut_short(data, header.jpeg, src, target_size):
            raise DecodeError(
                "JPEG scan data ends before the last rows of the image (libjpeg "
                "would fill them with grey)",
                "truncated",
            )
        orientation = _orientation(src)
        # Shrunk before any colour conversion: a full-size copy of a big PNG
        # would hold several times the memory of its decoded pixels.
        rgb = _to_rgb(_shrink(_resizable(src, 2 * target_size), 2 * target_size))
        if orientation in _TRANSPOSE:
            rgb = rgb.transpose(_TRANSPOSE[orientation])
        if orientation in _SWAPS_SIDES:
            orig_width, orig_height = orig_height, orig_width
        if rgb is src:
            # Closing ``src`` invalidates its pixels; hand out an independent copy.
            rgb = src.copy()
    return DecodedImage(image=rgb, width=orig_width, height=orig_height, format=file_format)


def _orientation(image: Image.Image) -> int:
    """The EXIF orientation tag (1 = upright); a broken EXIF block counts as upright."""
    try:
        value = image.getexif().get(ExifTags.Base.Orientation, 1)
    except (SyntaxError, ValueError, TypeError, KeyError, struct.error, OSError):
        # Cameras and editors often write broken EXIF; the pixels are still good.
        return 1
    return value if isinstance(value, int) else 1


def _to_rgb(image: Image.Image) -> Image.Image:
    """Convert any mode to ``"RGB"``; transparency is composited onto white."""
    if image.mode in _SIXTEEN_BIT_MODES or image.mode in ("I", "F"):
        image = _to_8bit_gray(image)
    if image.mode == "La":
        image = image.convert("LA")  # Pillow has no direct La -> RGBA conversion
    if image.mode in _ALPHA_MODES or "transparency" in image.info:
        # "transparency" covers palette and colour-key transparency (GIF, PNG tRNS).
        rgba = image.convert("RGBA")
        white = Image.new("RGBA", rgba.size, _WHITE_RGBA)
        return Image.alpha_composite(white, rgba).convert("RGB")
    if image.mode == "RGB":
        return image
    return image.convert("RGB")


def _to_8bit_gray(image: Image.Image) -> Image.Image:
    """Map 16-bit or 32-bit grayscale to mode ``"L"``.

    ``Image.convert`` clips such values at 255, which turns a 16-bit PNG
    almost white; scale the 0..65535 range down instead. Rows are converted a
    band at a time so that no full-size float copy is made.
    """
    values = np.asarray(image)  # (height, width), uint16/int32/float32
    scale = image.mode in _SIXTEEN_BIT_MODES or float(values.max(initial=0)) > 255.0
    gray = np.empty(values.shape, dtype=np.uint8)
    for top in range(0, values.shape[0], _GRAY_BAND_ROWS):
        band = values[top : top + _GRAY_BAND_ROWS].astype(np.float64)
        if scale:
            band /= 257.0
        gray[top : top + _GRAY_BAND_ROWS] = np.clip(np.rint(band), 0, 255)
    return Image.fromarray(gray)  # uint8 (height, width) -> mode "L"


def _resizable(image: Image.Image, max_side: int) -> Image.Image:
    """``image`` in a mode that ``Image.resize`` filters well, if it needs shrinking.

    Converts as little as possible: grey stays one byte per pixel, and alpha is
    kept (``resize`` premultiplies it) to be composited after shrinking.
    """
    if max(image.size) <= max_side:
        return image
    if image.mode in _SIXTEEN_BIT_MODES or image.mode in ("I", "F"):
        return _to_8bit_gray(image)
    if image.mode == "1":
        return image.convert("L")
    if image.mode == "PA" or "transparency" in image.info:
        # A palette index or colour key would not survive the filter.
        return image.convert("RGBA")
    if image.mode in ("L", "LA", "La", "RGB", "RGBA", "RGBa"):
        return image
    return image.convert("RGB")  # P, CMYK, YCbCr, ...


def _shrink(image: Image.Image, max_side: int) -> Image.Image:
    """Resize so the longer side is <= ``max_side``; never enlarges."""
    width, height = image.size
    longest = max(width, height)
    if longest <= max_side:
        return image
    scale = max_side / longest
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    # reducing_gap first box-reduces by an integer factor, then LANCZOS: a
    # big PNG shrinks fast with no visible loss at this size.
    return image.resize(size, Image.Resampling.LANCZOS, reducing_gap=3.0)


# --- header probe --------------------------------------------------------------


def _probe(data: bytes) -> _Header:
    """Identify the format and read the declared size without decoding.

    Raises:
        DecodeError: ``not_an_image``, ``unsupported`` or ``truncated`` (the
            bytes end before the size fields).
    """
    if not data:
        raise DecodeError("the response body is empty", "not_an_image")
    if data.startswith(b"\xff\xd8\xff"):
        return _Header("JPEG", _jpeg_size(data), jpeg=_jpeg_layout(data))
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return _Header("PNG", _png_size(data), pixel_bytes=_png_pixel_bytes(data))
    if data.startswith((b"GIF87a", b"GIF89a")):
        return _Header("GIF", _gif_size(data), pixel_bytes=_PIXEL_BYTES["GIF"])
    if data.startswith(b"RIFF") and data[8:12] == b"WEBP":
        size, declared = _webp_size(data)
        return _Header(
            "WEBP", size, truncated=len(data) < declared, pixel_bytes=_PIXEL_BYTES["WEBP"]
        )
    if data.startswith(b"BM") and data[14:18] in _BMP_HEADER_SIZES:
        return _Header("BMP", _bmp_size(data), pixel_bytes=_PIXEL_BYTES["BMP"])
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


def _walk_jpeg(data: bytes) -> tuple[tuple[int, int] | None, int | None]:
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


def _jpeg_size(data: bytes) -> tuple[int, int]:
    size, _ = _walk_jpeg(data)
    if size is None:
        raise DecodeError("file ends inside the JPEG header", "truncated")
    return size


def _jpeg_layout(data: bytes) -> _JpegLayout:
    """Read the frame and every scan header of the first picture (after :func:`_jpeg_size`).

    Entropy-coded data is skipped, not decoded. A picture that ends early
    just yields fewer scans; the decoder reports it.
    """
    components: tuple[tuple[int, int, int], ...] = ()
    progressive = False
    scans: list[_JpegScan] = []
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
            scans.append(_JpegScan(tuple(segment[1 : 1 + 2 * count : 2]), start, end, bits & 0x0F))
            found = _JPEG_MARKER_AFTER_SCAN.search(data, pos + 2 + length)
            if found is None:
                break
            pos = found.start()
            scan_ends.append(pos)
            continue
        pos += 2 + length
    return _JpegLayout(components, progressive, tuple(scans), tuple(scan_ends))


def _draft_scale(width: int, height: int, target_size: int) -> int:
    """The reduction JpegImageFile.draft picks for a ``target_size`` square request."""
    fits = min(width // target_size, height // target_size)
    return next(scale for scale in (8, 4, 2, 1) if fits >= scale or scale == 1)


def _decode_bytes(header: _Header, target_size: int) -> int:
    """Estimate the peak memory, in bytes, of decoding and shrinking the image."""
    width, height = header.size
    layout = header.jpeg
    if layout is None:
        return int(width * height * header.pixel_bytes)
    scale = _draft_scale(width, height, target_size)
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


def _scans_complete(layout: _JpegLayout) -> bool:
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


def _jpeg_cut_short(
    data: bytes, layout: _JpegLayout, loaded: Image.Image, target_size: int
) -> bool:
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
    if corner not in _JPEG_EMPTY_BLOCK and _scans_complete(layout):
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


def _ends_early(data: bytes, file_format: str) -> bool:
    """Whether the file stops before its format's end marker.

    Only consulted after a decoder failed, so a missing end marker on an
    otherwise readable file is never an error.
    """
    if file_format == "JPEG":
        _, scan = _walk_jpeg(data)
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


def _probe_bmff(data: bytes) -> _Header:
    """Probe an ISO-BMFF file; only the AVIF brands are accepted."""
    boxes, overrun = _bmff_boxes(data)
    ftyp = boxes[0] if boxes else None
    if ftyp is None or not ftyp.complete:
        raise DecodeError("file ends inside the ISO-BMFF ftyp box", "truncated")
    brands = {data[i : i + 4] for i in range(ftyp.start, ftyp.end - 3, 4)}
    if not brands & _AVIF_BRANDS:
        raise DecodeError("ISO-BMFF file that is not AVIF (HEIC or video?)", "unsupported")
    return _Header(
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
