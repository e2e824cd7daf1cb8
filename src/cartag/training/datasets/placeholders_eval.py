"""Evaluation-only Placeholder designs, written apart from :mod:`cartag.imaging.placeholders`.

The type head is trained on the synthetic generator's families; scoring it on
the same generator says little about placeholder designs seen in the wild.
This module draws different layouts with its own drawing code (dealership
badges, "no image" stamps, SUV/van/pickup silhouettes, corner ribbons, tiled
watermarks, picture-frame icons, noise textures, dark-mode cards), different
image sizes and different encodings (PNG, WebP, JPEG, rescaling). None of
these images is ever used for fitting.

Image ``i`` of a seed depends only on ``(seed, i)``.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from dataclasses import dataclass
from io import BytesIO
from typing import Final

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageFont

RGB = tuple[int, int, int]
Size = tuple[int, int]

WORDS: Final[tuple[str, ...]] = tuple(
    "NO IMAGE AVAILABLE|IMAGE NOT FOUND|NO PHOTO|PHOTOS PENDING|VEHICLE PHOTO PENDING|"
    "AWAITING IMAGES|PICTURES SOON|IMAGE UNAVAILABLE".split("|")
)
RIBBON_WORDS: Final[tuple[str, ...]] = ("SOLD", "COMING SOON", "RESERVED", "JUST ARRIVED", "NEW")
DEALERS: Final[tuple[str, ...]] = tuple(
    "NORTHGATE AUTO|BLUE RIDGE CARS|HARBOR MOTOR CO|SUMMIT AUTOMOTIVE|OAKWOOD DEALS|"
    "LAKESIDE VEHICLES".split("|")
)
# Sizes the training generator does not use.
EVAL_SIZES: Final[tuple[Size, ...]] = (
    (1200, 900),
    (720, 540),
    (480, 360),
    (1280, 720),
    (640, 640),
    (800, 533),
    (1024, 768),
    (360, 270),
)


@dataclass(frozen=True)
class EvalPlaceholder:
    """One evaluation image.

    Attributes:
        id: Stable identifier ``placeholder-eval/<seed>/<index>``.
        family: Design family (a key of :data:`EVAL_FAMILIES`).
        image: The RGB image.
    """

    id: str
    family: str
    image: Image.Image


def _rgb(rng: random.Random, lo: int = 0, hi: int = 255) -> RGB:
    return (rng.randint(lo, hi), rng.randint(lo, hi), rng.randint(lo, hi))


def _ink(bg: RGB, rng: random.Random) -> RGB:
    # Readable ink: far from the background's luminance.
    if sum(bg) > 380:
        return _rgb(rng, 10, 110)
    return _rgb(rng, 170, 250)


def _font(px: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    return ImageFont.load_default(size=max(9, px))


def _text_layer(text: str, px: int, rng: random.Random, tracking: float = 0.0) -> Image.Image:
    """Render ``text`` as an L-mode mask, either with letter tracking or pixel-scaled."""
    if rng.random() < 0.3:
        # Blocky look: the tiny bitmap font blown up with nearest-neighbour.
        small = ImageFont.load_default_imagefont()
        box = small.getbbox(text)
        mask = Image.new("L", (box[2] + 2, box[3] + 2), 0)
        ImageDraw.Draw(mask).text((1, 1), text, fill=255, font=small)
        scale = max(1, px // 10)
        return mask.resize((mask.width * scale, mask.height * scale), Image.Resampling.NEAREST)
    font = _font(px)
    advances = [font.getlength(ch) + tracking * px for ch in text]
    width = int(sum(advances)) + px
    mask = Image.new("L", (max(1, width), int(px * 1.5)), 0)
    draw = ImageDraw.Draw(mask)
    x = px / 2
    for ch, adv in zip(text, advances, strict=True):
        draw.text((x, px * 0.2), ch, fill=255, font=font)
        x += adv
    return mask


def _paste_text(
    image: Image.Image,
    text: str,
    center: tuple[float, float],
    px: int,
    fill: RGB,
    rng: random.Random,
    angle: float = 0.0,
    tracking: float = 0.0,
) -> None:
    mask = _text_layer(text, px, rng, tracking)
    if mask.width > image.width * 0.95:
        ratio = image.width * 0.95 / mask.width
        mask = mask.resize((max(1, int(mask.width * ratio)), max(1, int(mask.height * ratio))))
    if angle:
        mask = mask.rotate(angle, expand=True, resample=Image.Resampling.BICUBIC)
    x = int(center[0] - mask.width / 2)
    y = int(center[1] - mask.height / 2)
    image.paste(Image.new("RGB", mask.size, fill), (x, y), mask)


def _dealer_badge(rng: random.Random, size: Size) -> Image.Image:
    w, h = size
    bg = _rgb(rng, 215, 255) if rng.random() < 0.7 else _rgb(rng, 40, 120)
    image = Image.new("RGB", size, bg)
    draw = ImageDraw.Draw(image)
    accent, ink = _rgb(rng), _ink(bg, rng)
    r = min(w, h) * rng.uniform(0.22, 0.34)
    cx, cy = w / 2, h * 0.44
    sides = rng.choice((0, 6, 8))
    if sides:
        draw.regular_polygon((cx, cy, r), sides, rotation=rng.uniform(0, 30), fill=accent)
        draw.regular_polygon((cx, cy, r * 0.82), sides, outline=bg, width=max(2, int(r / 25)))
    else:
        draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=accent)
        draw.ellipse((cx - r * 0.8, cy - r * 0.8, cx + r * 0.8, cy + r * 0.8), outline=bg, width=3)
    for k in range(rng.randint(0, 5)):  # stars along the lower arc
        a = math.pi * (1.2 + 0.15 * k)
        star = (cx + r * 0.6 * math.cos(a), cy - r * 0.6 * math.sin(a), r * 0.07)
        draw.regular_polygon(star, 5, fill=bg)
    name = rng.choice(DEALERS)
    initials = "".join(word[0] for word in name.split()[:2])
    _paste_text(image, initials, (cx, cy), int(r * 0.7), _ink(accent, rng), rng)
    _paste_text(image, name, (w / 2, h * 0.84), int(h * 0.06), ink, rng, tracking=0.15)
    return image


def _stamp(rng: random.Random, size: Size) -> Image.Image:
    w, h = size
    image = Image.new("RGB", size, _rgb(rng, 225, 250))
    ink = rng.choice(((190, 30, 40), (30, 60, 160), (60, 60, 60), (20, 120, 60)))
    layer = Image.new("L", size, 0)
    draw = ImageDraw.Draw(layer)
    bw, bh = w * rng.uniform(0.55, 0.8), h * rng.uniform(0.25, 0.4)
    box = (w / 2 - bw / 2, h / 2 - bh / 2, w / 2 + bw / 2, h / 2 + bh / 2)
    draw.rectangle(box, outline=255, width=max(3, int(h / 60)))
    inset = max(6, int(h / 40))
    inner = (box[0] + inset, box[1] + inset, box[2] - inset, box[3] - inset)
    draw.rectangle(inner, outline=255, width=max(1, int(h / 150)))
    text = _text_layer(rng.choice(WORDS), int(bh * 0.28), rng, tracking=0.05)
    text = text.resize((int(bw * 0.8), int(bh * 0.45)))
    layer.paste(text, (int(w / 2 - text.width / 2), int(h / 2 - text.height / 2)), text)
    layer = layer.rotate(rng.uniform(-18, 18), resample=Image.Resampling.BICUBIC)
    # Worn rubber: knock random speckles out of the ink.
    keep = np.random.default_rng(rng.getrandbits(32)).random((h, w)) > 0.18
    speckle = np.asarray(layer, dtype=np.float32) * keep
    image.paste(Image.new("RGB", size, ink), (0, 0), Image.fromarray(speckle.astype(np.uint8)))
    return image


# Side-view outlines in units of the wheelbase scale ``u``: (x right of x0, y above the base).
_BODIES: Final[dict[str, tuple[tuple[float, float], ...]]] = {
    "van": ((0, 0), (0, 1.5), (0.6, 2.0), (5.0, 2.0), (5.0, 0)),
    "pickup": (
        (0, 0),
        (0, 0.9),
        (1.2, 1.0),
        (1.6, 1.8),
        (2.7, 1.8),
        (2.8, 1.0),
        (5.0, 1.0),
        (5.0, 0),
    ),
    "suv": ((0, 0), (0.1, 1.0), (0.9, 1.2), (1.4, 1.9), (4.6, 1.9), (5.0, 1.0), (5.0, 0)),
}
_WINDOWS: Final[dict[str, tuple[tuple[float, float, float, float], ...]]] = {
    "van": ((0.9, 1.8, 1.9, 1.2),),
    "pickup": ((1.75, 1.65, 2.6, 1.1),),
    "suv": ((1.6, 1.75, 3.0, 1.2), (3.15, 1.75, 4.5, 1.2)),
}


def _silhouette(rng: random.Random, size: Size) -> Image.Image:
    w, h = size
    bg = _rgb(rng, 200, 245)
    image = Image.new("RGB", size, bg)
    draw = ImageDraw.Draw(image)
    fill = _rgb(rng, 90, 170)
    u = min(w / 5.5, h / 3.2) * rng.uniform(0.7, 1.0)
    x0, base = w / 2 - 2.5 * u, h * 0.62
    kind = rng.choice(list(_BODIES))
    draw.polygon([(x0 + a * u, base - b * u) for a, b in _BODIES[kind]], fill=fill)
    for a0, b0, a1, b1 in _WINDOWS[kind]:
        draw.rectangle((x0 + a0 * u, base - b0 * u, x0 + a1 * u, base - b1 * u), fill=bg)
    for wx in (x0 + 1.1 * u, x0 + 3.9 * u):
        draw.ellipse((wx - 0.55 * u, base - 0.5 * u, wx + 0.55 * u, base + 0.6 * u), fill=bg)
        draw.ellipse((wx - 0.42 * u, base - 0.37 * u, wx + 0.42 * u, base + 0.47 * u), fill=fill)
    if rng.random() < 0.7:
        _paste_text(image, rng.choice(WORDS), (w / 2, h * 0.86), int(h * 0.055), fill, rng)
    return image


def _ribbon(rng: random.Random, size: Size) -> Image.Image:
    w, h = size
    image = Image.new("RGB", size, _rgb(rng, 180, 240))
    draw = ImageDraw.Draw(image)
    stripe = _rgb(rng, 150, 230)
    step = rng.randint(12, 40)
    for x in range(-h, w, step * 2):
        draw.polygon([(x, 0), (x + step, 0), (x + step + h, h), (x + h, h)], fill=stripe)
    band = Image.new("L", size, 0)
    thick = min(w, h) * rng.uniform(0.12, 0.2)
    corner = rng.random() < 0.5
    if corner:
        x0, y1, d = w * 0.45, h * 0.55, thick * 1.4
        ImageDraw.Draw(band).polygon([(x0, 0), (x0 + d, 0), (w, y1 - d), (w, y1)], fill=255)
    else:
        ImageDraw.Draw(band).rectangle((0, h / 2 - thick / 2, w, h / 2 + thick / 2), fill=255)
        band = band.rotate(rng.uniform(-35, 35), resample=Image.Resampling.BICUBIC)
    color = rng.choice(((200, 20, 30), (20, 130, 60), (230, 150, 0), (20, 60, 170)))
    image.paste(Image.new("RGB", size, color), (0, 0), band)
    word = rng.choice(RIBBON_WORDS)
    if corner:
        c = (w * 0.45 + thick * 0.7 + (w * 0.55) / 2, h * 0.275 - thick * 0.7 / 2)
        _paste_text(image, word, c, int(thick * 0.55), (255, 255, 255), rng, angle=-40)
    else:
        _paste_text(image, word, (w / 2, h / 2), int(thick * 0.6), (255, 255, 255), rng)
    return image


def _watermark(rng: random.Random, size: Size) -> Image.Image:
    w, h = size
    bg = _rgb(rng, 120, 235)
    image = Image.new("RGB", size, bg)
    tile = _text_layer(rng.choice(DEALERS), int(h * rng.uniform(0.035, 0.06)), rng)
    sheet = Image.new("L", (w * 2, h * 2), 0)
    for yy in range(0, h * 2, int(tile.height * 2.2)):
        offset = (yy // max(1, tile.height)) % 2 * tile.width // 2
        for xx in range(-offset, w * 2, int(tile.width * 1.2)):
            sheet.paste(tile, (xx, yy))
    sheet = sheet.rotate(rng.uniform(20, 45), resample=Image.Resampling.BICUBIC)
    sheet = sheet.crop((w // 2, h // 2, w // 2 + w, h // 2 + h)).point(lambda v: v * 0.35)
    image.paste(Image.new("RGB", size, _ink(bg, rng)), (0, 0), sheet)
    if rng.random() < 0.6:
        draw = ImageDraw.Draw(image)
        bw, bh = w * 0.5, h * 0.18
        draw.rounded_rectangle(
            (w / 2 - bw / 2, h / 2 - bh / 2, w / 2 + bw / 2, h / 2 + bh / 2),
            radius=int(bh / 4),
            fill=_rgb(rng, 230, 255),
        )
        _paste_text(image, rng.choice(WORDS), (w / 2, h / 2), int(bh * 0.35), (40, 40, 40), rng)
    return image


def _photo_icon(rng: random.Random, size: Size) -> Image.Image:
    w, h = size
    bg = _rgb(rng, 225, 250)
    image = Image.new("RGB", size, bg)
    draw = ImageDraw.Draw(image)
    ink = _rgb(rng, 110, 190)
    s = min(w, h) * rng.uniform(0.28, 0.42)
    left, top = w / 2 - s * 0.6, h * 0.42 - s / 2

    def at(a: float, b: float) -> tuple[float, float]:
        return (left + a * s, top + b * s)

    width = max(3, int(s / 18))
    draw.rounded_rectangle((*at(0, 0), *at(1.2, 1)), radius=int(s / 10), outline=ink, width=width)
    draw.polygon([at(0.1, 0.88), at(0.45, 0.4), at(0.7, 0.88)], fill=ink)  # mountains
    draw.polygon([at(0.55, 0.88), at(0.85, 0.55), at(1.12, 0.88)], fill=ink)
    draw.ellipse((*at(0.78, 0.12), *at(0.98, 0.32)), fill=ink)  # sun
    if rng.random() < 0.4:
        draw.line((*at(-0.1, 1.1), *at(1.3, -0.1)), fill=ink, width=max(3, int(s / 14)))
    if rng.random() < 0.6:
        _paste_text(image, rng.choice(WORDS), (w / 2, h * 0.82), int(h * 0.05), ink, rng)
    return image


def _noise(rng: random.Random, size: Size) -> Image.Image:
    w, h = size
    gen = np.random.default_rng(rng.getrandbits(32))
    base = np.asarray(_rgb(rng, 60, 200), dtype=np.float32)
    spread = rng.uniform(10, 70)
    if rng.random() < 0.5:
        noise = gen.normal(0, spread, (h, w, 1)).repeat(3, axis=2)
    else:
        noise = gen.normal(0, spread, (h, w, 3))
    image = Image.fromarray(np.clip(base + noise, 0, 255).astype(np.uint8), "RGB")
    if rng.random() < 0.5:
        image = image.filter(ImageFilter.GaussianBlur(rng.uniform(0.8, 3.0)))
    if rng.random() < 0.5:
        _paste_text(image, rng.choice(WORDS), (w / 2, h / 2), int(h * 0.07), (250, 250, 250), rng)
    return image


_CAMERA_TOP = ((-0.8, -1.0), (-0.5, -1.3), (0.5, -1.3), (0.8, -1.0))
_HATCHBACK = ((-2, 0.5), (-2, -0.1), (-1.0, -0.3), (-0.4, -1.0), (1.2, -1.0), (2, -0.1), (2, 0.5))


def _dark_card(rng: random.Random, size: Size) -> Image.Image:
    w, h = size
    image = Image.new("RGB", size, _rgb(rng, 8, 35))
    draw = ImageDraw.Draw(image)
    m = min(w, h) * 0.08
    draw.rounded_rectangle((m, m, w - m, h - m), radius=int(m), fill=_rgb(rng, 35, 60))
    ink = _rgb(rng, 150, 210)
    lw = max(2, int(min(w, h) / 120))
    cx, cy, r = w / 2, h * 0.42, min(w, h) * 0.12

    def pts(shape: tuple[tuple[float, float], ...]) -> list[tuple[float, float]]:
        return [(cx + a * r, cy + b * r) for a, b in shape]

    if rng.random() < 0.5:  # line-art camera
        box = (cx - 1.5 * r, cy - r, cx + 1.5 * r, cy + r)
        draw.rounded_rectangle(box, radius=int(r / 4), outline=ink, width=lw)
        draw.ellipse(
            (cx - 0.6 * r, cy - 0.6 * r, cx + 0.6 * r, cy + 0.6 * r), outline=ink, width=lw
        )
        draw.line(pts(_CAMERA_TOP), fill=ink, width=lw)
    else:  # line-art hatchback
        outline = pts(_HATCHBACK)
        draw.line([*outline, outline[0]], fill=ink, width=lw)
        for wx in (cx - 1.1 * r, cx + 1.1 * r):
            draw.ellipse((wx - 0.4 * r, cy + 0.2 * r, wx + 0.4 * r, cy + r), outline=ink, width=lw)
    _paste_text(image, rng.choice(WORDS).lower(), (w / 2, h * 0.72), int(h * 0.045), ink, rng)
    return image


EVAL_FAMILIES: Final[dict[str, Callable[[random.Random, Size], Image.Image]]] = {
    "dealer_badge": _dealer_badge,
    "stamp": _stamp,
    "silhouette": _silhouette,
    "ribbon": _ribbon,
    "watermark": _watermark,
    "photo_icon": _photo_icon,
    "noise": _noise,
    "dark_card": _dark_card,
}


def _encode(image: Image.Image, rng: random.Random) -> Image.Image:
    """Round-trip through a listing-like encoding (and sometimes a rescale)."""
    if rng.random() < 0.3:
        factor = rng.uniform(0.3, 0.7)
        small = image.resize(
            (max(8, int(image.width * factor)), max(8, int(image.height * factor)))
        )
        image = small.resize(image.size, Image.Resampling.BICUBIC)
    fmt = rng.choice(("PNG", "WEBP", "JPEG"))
    buffer = BytesIO()
    if fmt == "PNG":
        image.save(buffer, format="PNG")
    else:
        image.save(buffer, format=fmt, quality=rng.randint(40, 90))
    buffer.seek(0)
    with Image.open(buffer) as decoded:
        decoded.load()
        return decoded.convert("RGB")


def make_eval_placeholder(seed: int, index: int, family: str | None = None) -> EvalPlaceholder:
    """Generate evaluation image ``index`` of a seeded set.

    Args:
        seed: Set seed.
        index: Position in the set; families cycle with the index.
        family: Force a design family instead of the cyclic one.
    """
    names = list(EVAL_FAMILIES)
    name = family or names[index % len(names)]
    rng = random.Random(f"cartag-placeholder-eval:{seed}:{index}")
    image = EVAL_FAMILIES[name](rng, rng.choice(EVAL_SIZES))
    return EvalPlaceholder(
        id=f"placeholder-eval/{seed}/{index:04d}", family=name, image=_encode(image, rng)
    )


def generate_eval_placeholders(n: int, seed: int = 0) -> list[EvalPlaceholder]:
    """Generate ``n`` evaluation placeholders, families in equal shares.

    Args:
        n: Number of images.
        seed: Set seed.
    """
    return [make_eval_placeholder(seed, i) for i in range(n)]
