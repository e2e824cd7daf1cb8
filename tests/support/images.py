"""Image factories for tests: each returns the bytes of a small, deterministic file.

Plain functions, no fixtures, so any test module can import them. Sizes are
kept small so a test suite can build hundreds of images in well under a second.
"""

from __future__ import annotations

import io
import random
import struct
import zlib
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

RGB = tuple[int, int, int]

# EXIF tag number of Orientation.
_ORIENTATION = 0x0112


def _save(image: Image.Image, fmt: str, **params: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **params)
    return buffer.getvalue()


def _marked(width: int, height: int, color: RGB) -> Image.Image:
    """Solid ``color`` with a black block in the top-left quarter.

    The block makes orientation visible: after a rotation it sits in another
    corner.
    """
    image = Image.new("RGB", (width, height), color)
    ImageDraw.Draw(image).rectangle((0, 0, max(0, width // 4 - 1), max(0, height // 4 - 1)), 0)
    return image


def jpeg_bytes(
    width: int = 64,
    height: int = 48,
    color: RGB = (200, 30, 30),
    quality: int = 90,
    exif_orientation: int | None = None,
) -> bytes:
    """A baseline RGB JPEG of one colour.

    Args:
        width: Stored width in pixels (before any EXIF rotation).
        height: Stored height in pixels.
        color: Fill colour.
        quality: JPEG quality, 1-95.
        exif_orientation: EXIF Orientation tag (1-8) to write, or ``None`` for
            no EXIF block. With a value, the top-left quarter is painted black
            so that the rotation is visible.
    """
    if exif_orientation is None:
        return _save(Image.new("RGB", (width, height), color), "JPEG", quality=quality)
    exif = Image.Exif()
    exif[_ORIENTATION] = exif_orientation
    image = _marked(width, height, color)
    return _save(image, "JPEG", quality=quality, exif=exif.tobytes())


def cmyk_jpeg_bytes(
    width: int = 64, height: int = 48, cmyk: tuple[int, int, int, int] = (0, 230, 230, 0)
) -> bytes:
    """A CMYK JPEG of one colour (default: a red)."""
    return _save(Image.new("CMYK", (width, height), cmyk), "JPEG", quality=90)


def noise_jpeg_bytes(
    width: int = 256, height: int = 256, seed: int = 0, quality: int = 90
) -> bytes:
    """A JPEG of random pixels: large on disk for its size, hard to compress."""
    rng = random.Random(seed)
    image = Image.frombytes("RGB", (width, height), rng.randbytes(width * height * 3))
    return _save(image, "JPEG", quality=quality)


def truncated_jpeg_bytes(width: int = 256, height: int = 256, keep: float = 0.5) -> bytes:
    """A JPEG cut off after ``keep`` of its bytes (headers intact, scan data partial)."""
    data = noise_jpeg_bytes(width, height)
    return data[: int(len(data) * keep)]


def png_bytes(
    width: int = 64,
    height: int = 48,
    mode: str = "RGBA",
    transparent: bool = False,
    color: RGB = (200, 30, 30),
) -> bytes:
    """A PNG in the given mode.

    Args:
        width: Width in pixels.
        height: Height in pixels.
        mode: ``"RGBA"``, ``"RGB"``, ``"P"``, ``"LA"``, ``"L"``, ``"1"`` or
            ``"I;16"`` (16-bit grayscale).
        transparent: Make everything transparent except an opaque ``color``
            square in the middle (a logo on a transparent background). For
            ``"P"`` this uses a palette transparency index; for ``"RGB"`` and
            ``"L"`` a tRNS colour key (black). Ignored for ``"1"``/``"I;16"``.
        color: Colour of the image (or of the square when ``transparent``);
            grayscale modes use its luma.
    """
    base = Image.new("RGBA", (width, height), (*color, 255))
    if transparent:
        base = Image.new("RGBA", (width, height), (0, 0, 0, 0))
        box = (width // 4, height // 4, width - width // 4 - 1, height - height // 4 - 1)
        ImageDraw.Draw(base).rectangle(box, (*color, 255))
    params: dict[str, object] = {}
    if mode == "RGBA":
        image = base
    elif mode == "LA":
        image = base.convert("LA")
    elif mode == "P":
        # Palette index 0 = transparent black, 1 = the colour.
        image = Image.new("P", (width, height), 0)
        image.putpalette([0, 0, 0, *color] + [0, 0, 0] * 254)
        image.paste(1, (0, 0, width, height), mask=base.getchannel("A") if transparent else None)
        if transparent:
            params["transparency"] = 0
    elif mode in ("RGB", "L"):
        image = base.convert(mode) if not transparent else _keyed(base, mode)
        if transparent:
            params["transparency"] = 0 if mode == "L" else (0, 0, 0)
    elif mode == "1":
        image = base.convert("L").point(lambda v: 255 if v > 127 else 0).convert("1")
    elif mode == "I;16":
        luma = np.asarray(base.convert("L"), dtype=np.uint16)
        image = Image.fromarray(luma * 257)  # uint16 array -> mode "I;16"
    else:
        raise ValueError(f"unsupported mode {mode!r}")
    return _save(image, "PNG", **params)


def _keyed(rgba: Image.Image, mode: str) -> Image.Image:
    # Transparent pixels become black, the colour key written as tRNS.
    flat = Image.new("RGB", rgba.size, (0, 0, 0))
    flat.paste(rgba.convert("RGB"), mask=rgba.getchannel("A"))
    return flat.convert(mode)


@lru_cache(maxsize=8)
def bomb_png_bytes(width: int = 20000, height: int = 20000) -> bytes:
    """A valid 1-bit grayscale PNG of ``width`` x ``height`` black pixels.

    The rows are all zero, so zlib packs them to about 1/1000 of their size
    (20000x20000: 50 MB of pixel data, ~50 kB on disk). Built by hand because
    Pillow would refuse to create such an image. Cached: the compression takes
    a few tenths of a second for the default size.
    """

    def chunk(kind: bytes, payload: bytes) -> bytes:
        body = kind + payload
        return struct.pack(">I", len(payload)) + body + struct.pack(">I", zlib.crc32(body))

    row = b"\x00" * (1 + (width + 7) // 8)  # filter byte "None" + packed bits
    compressor = zlib.compressobj(9)
    rows_per_piece = max(1, (1 << 20) // len(row))
    piece = row * rows_per_piece
    parts = []
    full, rest = divmod(height, rows_per_piece)
    for _ in range(full):
        parts.append(compressor.compress(piece))
    parts.append(compressor.compress(row * rest))
    parts.append(compressor.flush())
    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)  # 1 bit, grayscale
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", b"".join(parts))
        + chunk(b"IEND", b"")
    )


def gif_bytes(
    frames: int = 2,
    width: int = 32,
    height: int = 24,
    colors: Sequence[RGB] = ((200, 30, 30), (30, 30, 200), (30, 200, 30)),
) -> bytes:
    """An (animated, if ``frames`` > 1) GIF; frame ``i`` is ``colors[i % len(colors)]``."""
    images = [Image.new("RGB", (width, height), colors[i % len(colors)]) for i in range(frames)]
    return _save(images[0], "GIF", save_all=True, append_images=images[1:], duration=100, loop=0)


def webp_bytes(
    width: int = 64,
    height: int = 48,
    color: RGB = (200, 30, 30),
    lossless: bool = False,
    alpha: bool = False,
    frames: int = 1,
) -> bytes:
    """A WebP of one colour.

    Args:
        width: Width in pixels.
        height: Height in pixels.
        color: Fill colour of the first frame; later frames are blue.
        lossless: VP8L instead of VP8.
        alpha: Fully transparent left half (forces the extended VP8X header).
        frames: More than 1 makes an animated WebP.
    """
    first = Image.new("RGBA" if alpha else "RGB", (width, height), color)
    if alpha:
        ImageDraw.Draw(first).rectangle((0, 0, width // 2 - 1, height - 1), (0, 0, 0, 0))
    rest = [Image.new(first.mode, (width, height), (30, 30, 200)) for _ in range(frames - 1)]
    params: dict[str, object] = {"lossless": lossless, "quality": 90}
    if rest:
        params.update(save_all=True, append_images=rest, duration=100)
    return _save(first, "WEBP", **params)


def real_photos(shared_data: Path, n: int, seed: int = 0) -> list[Path]:
    """A deterministic sample of real car photos, spread across the colour folders.

    Args:
        shared_data: The ``vcr-train`` folder (the ``shared_data`` fixture).
        n: How many photos; fewer if the folders hold fewer.
        seed: Changes which photos are picked.

    Returns:
        Paths, taken round-robin from the colour folders in name order, each
        folder shuffled with ``seed``.
    """
    rng = random.Random(seed)
    folders: list[list[Path]] = []
    for folder in sorted(p for p in shared_data.iterdir() if p.is_dir()):
        files = sorted(folder.glob("*.jpg"))
        rng.shuffle(files)
        if files:
            folders.append(files)
    picked: list[Path] = []
    depth = 0
    while len(picked) < n and any(depth < len(files) for files in folders):
        for files in folders:
            if depth < len(files) and len(picked) < n:
                picked.append(files[depth])
        depth += 1
    return picked


def placeholder_png(text: str = "Image coming soon", size: tuple[int, int] = (640, 480)) -> bytes:
    """A "no photo yet" graphic like dealer sites show: gradient, camera icon, caption."""
    width, height = size
    image = Image.new("RGB", size)
    draw = ImageDraw.Draw(image)
    for y in range(height):  # light vertical gradient
        shade = 235 - (25 * y) // max(1, height - 1)
        draw.line((0, y, width, y), fill=(shade, shade, shade + 5))
    # A camera: body, lens, viewfinder bump.
    cx, cy, unit = width // 2, height * 2 // 5, max(4, min(width, height) // 10)
    draw.rounded_rectangle(
        (cx - 2 * unit, cy - unit, cx + 2 * unit, cy + unit + unit // 2),
        radius=unit // 3,
        fill=(150, 150, 160),
    )
    draw.rectangle(
        (cx - unit // 2, cy - unit - unit // 2, cx + unit // 2, cy - unit), (150, 150, 160)
    )
    draw.ellipse((cx - unit + 4, cy - unit // 2, cx + unit - 4, cy + unit), fill=(225, 225, 230))
    draw.ellipse((cx - unit // 2, cy, cx + unit // 2, cy + unit // 2), fill=(120, 120, 130))
    font = ImageFont.load_default()
    left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
    draw.text(((width - (right - left)) // 2, cy + 2 * unit), text, fill=(90, 90, 100), font=font)
    return _save(image, "PNG")
