"""Turn downloaded bytes into a small RGB image, or a :class:`DecodeError` saying why not.

The bytes come from arbitrary web servers, so decoding is defensive:

* Only web image formats are decoded (JPEG/MPO, PNG/APNG, GIF, WebP, BMP,
  AVIF). Pillow can open many more, some through external programs
  (Ghostscript for EPS); anything else that looks like an image is
  ``unsupported``.
* The pixel count is read from the file header by the small parsers of
  :mod:`cartag.imaging.probe`
  *before* Pillow sees the bytes. Pillow runs its own decompression-bomb check
  inside ``Image.open`` and reports it with a *warning*; silencing that
  warning needs ``warnings.catch_warnings``, which is not thread-safe, and
  changing ``Image.MAX_IMAGE_PIXELS`` would change every other user of Pillow
  in the process. Rejecting the file before ``Image.open`` avoids both.
* Truncated files are errors (``LOAD_TRUNCATED_IMAGES`` stays off): a
  half-grey photo must not be classified. libjpeg does not fail on a JPEG cut
  short that still ends with an end-of-image marker (or whose header declares
  more rows than its scan holds): it warns, silently in Pillow, and fills the
  rest with grey. Such files are caught by
  :func:`~cartag.imaging.jpeg.jpeg_cut_short`.
* Decoding memory is bounded. JPEGs are decoded at reduced size (draft mode);
  other formats, and progressive JPEGs (libjpeg keeps every coefficient of the
  full image), cannot be, so the memory a decode needs is estimated from the
  header and a file needing more than ``max_decode_bytes`` is refused as
  ``too_many_pixels``. Decodes running at the same time in the process hold at
  most ``max_decode_bytes`` together: one that does not fit waits (see
  :class:`~cartag.imaging.limits.DecodeBudget`). Big images are shrunk before their colours are
  converted, so the working set stays close to the decoded pixels.
* Pillow still reports corrupt EXIF metadata with a ``UserWarning`` while
  opening the file. Normally it is printed and the image is used; where
  warnings are errors (the test suite) the file is ``unsupported``.

:func:`decode_image` keeps no state between calls, apart from the process-wide
count of decode memory in use, and is safe to run from many threads at once.
"""

from __future__ import annotations

import io
import struct
from dataclasses import dataclass

import numpy as np
from PIL import ExifTags, Image

from cartag.errors import DecodeError
from cartag.imaging.jpeg import jpeg_cut_short
from cartag.imaging.limits import DEFAULT_MAX_DECODE_BYTES, IN_FLIGHT, decode_bytes
from cartag.imaging.probe import Header, ends_early, probe

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


def decode_image(
    data: bytes,
    *,
    max_pixels: int,
    target_size: int = 320,
    max_decode_bytes: int = DEFAULT_MAX_DECODE_BYTES,
    draft_size: int | None = None,
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
        draft_size: Shorter side a JPEG's draft decode may go down to (default
            ``target_size``). A consumer that needs less than ``target_size``
            (the model's input) sets it lower: a 1600x1200 JPEG then decodes at
            1/4 scale, 400x300, instead of 1/2 and a resize to ``2 * target_size``.

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
    draft = target_size if draft_size is None else draft_size
    if max_pixels <= 0 or target_size <= 0 or max_decode_bytes <= 0 or draft <= 0:
        raise ValueError(
            "max_pixels, target_size, draft_size and max_decode_bytes must be positive"
        )
    limit = max_pixels
    if Image.MAX_IMAGE_PIXELS is not None:
        limit = min(limit, Image.MAX_IMAGE_PIXELS)

    header = probe(data)
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
    need = decode_bytes(header, draft)
    if need > max_decode_bytes:
        mib = 1024 * 1024
        raise DecodeError(
            f"decoding this {width}x{height} {header.format} needs about {-(-need // mib)} MiB, "
            f"more than the limit of {max_decode_bytes // mib} MiB (CARTAG_MAX_DECODE_MB); "
            "only baseline JPEGs are decoded at reduced size",
            "too_many_pixels",
        )

    try:
        with IN_FLIGHT.hold(need, max_decode_bytes):
            return _decode(data, header, limit, target_size, draft)
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
        truncated = "truncated" in str(exc).lower() or ends_early(data, header.format)
        raise DecodeError(
            f"cannot decode {header.format}: {exc}", "truncated" if truncated else "unsupported"
        ) from exc


def _decode(data: bytes, header: Header, limit: int, target_size: int, draft: int) -> DecodedImage:
    """Open, load and normalise the image; errors propagate to :func:`decode_image`."""
    src = Image.open(io.BytesIO(data), formats=[header.format])
    try:
        rgb, width, height = _normalised(src, data, header, limit, target_size, draft)
    except BaseException:
        src.close()
        raise
    if rgb is not src:
        src.close()
    # else ``src`` is handed out as it is: closing it would invalidate its pixels, and a
    # copy cost as much as a tenth of the decode. It holds nothing but ``data`` open.
    # (The header's format: Pillow calls a JPEG with pictures appended, as phones write, MPO.)
    return DecodedImage(image=rgb, width=width, height=height, format=header.format)


def _normalised(
    src: Image.Image, data: bytes, header: Header, limit: int, target_size: int, draft: int
) -> tuple[Image.Image, int, int]:
    """The loaded RGB image (``src`` itself when it already is one) and the original size."""
    orig_width, orig_height = src.size
    if orig_width * orig_height > limit:
        raise DecodeError(
            f"image is {orig_width}x{orig_height} pixels, more than the limit of {limit}",
            "too_many_pixels",
        )
    if header.format == "JPEG":
        # libjpeg scales by 1/2, 1/4 or 1/8 while decoding, keeping both
        # sides >= draft: far less work than decoding then resizing.
        src.draft("RGB", (draft, draft))
    # Animated GIF/WebP/APNG: a freshly opened file is positioned on frame 0.
    src.load()
    if header.jpeg is not None and jpeg_cut_short(data, header.jpeg, src, draft):
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
    return rgb, orig_width, orig_height


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
