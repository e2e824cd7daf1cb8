"""Seeded generator of synthetic Placeholder images (no vehicle in the picture).

Real listings show "photo coming soon" cards, dealer logos and banners, camera
or car icons and blank cards where a photo is missing. The real training set
has none, so the type head learns the class from these. Image ``i`` of a seed
depends only on ``(seed, i)``, so a set can grow without changing its members.

Only Pillow's bundled font is used so that the images (and the training-data
hash) do not depend on the fonts installed on the machine.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass
from io import BytesIO
from typing import Final

from PIL import Image, ImageDraw, ImageFilter, ImageFont

RGB = tuple[int, int, int]

PHRASES: Final[tuple[str, ...]] = (
    "image coming soon",
    "photo coming soon",
    "photos coming soon",
    "no photo",
    "no image available",
    "photo to follow",
    "photos to follow",
    "picture not available",
    "more photos soon",
    "image not available",
    "coming soon",
    "photo unavailable",
)
DEALER_WORDS: Final[tuple[str, ...]] = (
    "AUTO SALES",
    "MOTORS",
    "AUTO GROUP",
    "CAR CENTER",
    "PRE-OWNED",
    "AUTOHAUS",
    "FINE CARS",
)
# Listing image shapes: 4:3, 3:2, 16:9, square, banner-ish.
SIZES: Final[tuple[tuple[int, int], ...]] = (
    (640, 480),
    (800, 600),
    (400, 300),
    (600, 400),
    (960, 540),
    (500, 500),
    (320, 240),
    (1024, 683),
)


@dataclass(frozen=True)
class Placeholder:
    """One generated image.

    Attributes:
        id: Stable identifier ``placeholder/<seed>/<index>``.
        family: Design family (see :data:`FAMILIES`).
        image: The RGB image.
    """

    id: str
    family: str
    image: Image.Image


def _color(rng: random.Random, tone: str = "any") -> RGB:
    if tone == "light":
        return (rng.randint(200, 255), rng.randint(200, 255), rng.randint(200, 255))
    if tone == "dark":
        return (rng.randint(0, 70), rng.randint(0, 70), rng.randint(0, 90))
    if tone == "grey":
        v = rng.randint(90, 235)
        return (v, v, v)
    return (rng.randint(0, 255), rng.randint(0, 255), rng.randint(0, 255))


def _contrast(background: RGB, rng: random.Random) -> RGB:
    light = sum(background) / 3 > 128
    return _color(rng, "dark" if light else "light")


def _background(rng: random.Random, size: tuple[int, int]) -> Image.Image:
    tone = rng.choice(("light", "light", "grey", "dark", "any", "white"))
    if tone == "white":
        return Image.new("RGB", size, (255, 255, 255))
    return Image.new("RGB", size, _color(rng, tone))


def _gradient(rng: random.Random, size: tuple[int, int]) -> Image.Image:
    w, h = size
    a, b = _color(rng), _color(rng, rng.choice(("light", "dark", "grey")))
    # A 256-step ramp stretched to the image; radial ones come from a blurred ellipse.
    ramp = Image.linear_gradient("L")
    if rng.random() < 0.3:
        ramp = Image.radial_gradient("L")
    if rng.random() < 0.5:
        ramp = ramp.transpose(Image.Transpose.ROTATE_90)
    ramp = ramp.resize((w, h), Image.Resampling.BILINEAR)
    return Image.composite(Image.new("RGB", size, a), Image.new("RGB", size, b), ramp)


def _pixel(image: Image.Image, xy: tuple[int, int]) -> RGB:
    px = image.getpixel(xy)
    assert isinstance(px, tuple)
    return (int(px[0]), int(px[1]), int(px[2]))


def _font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    return ImageFont.load_default(size=max(8, size))


def _text(
    draw: ImageDraw.ImageDraw,
    rng: random.Random,
    size: tuple[int, int],
    text: str,
    fill: RGB,
    center: tuple[float, float] = (0.5, 0.5),
    scale: float = 1.0,
) -> None:
    w, h = size
    style = rng.random()
    if style < 0.4:
        text = text.upper()
    elif style < 0.7:
        text = text.title()
    if rng.random() < 0.4 and " " in text:
        words = text.split(" ")
        cut = rng.randint(1, len(words) - 1)
        text = " ".join(words[:cut]) + "\n" + " ".join(words[cut:])
    # Font size as a fraction of the width, from small print to a bold headline.
    font_size = int(w * rng.uniform(0.04, 0.11) * scale)
    font = _font(font_size)
    stroke = rng.choice((0, 0, 0, 1, 2))
    box = draw.multiline_textbbox((0, 0), text, font=font, stroke_width=stroke, align="center")
    tw, th = box[2] - box[0], box[3] - box[1]
    x = int(center[0] * w - tw / 2)
    y = int(center[1] * h - th / 2)
    draw.multiline_text(
        (x, y), text, fill=fill, font=font, stroke_width=stroke, align="center", spacing=4
    )


def _camera(draw: ImageDraw.ImageDraw, cx: float, cy: float, r: float, fill: RGB, bg: RGB) -> None:
    body = (cx - 1.6 * r, cy - r, cx + 1.6 * r, cy + 1.1 * r)
    draw.rounded_rectangle(body, radius=int(r * 0.3), fill=fill)
    draw.rectangle((cx - 0.6 * r, cy - 1.35 * r, cx + 0.4 * r, cy - r), fill=fill)
    draw.ellipse((cx - 0.75 * r, cy - 0.6 * r, cx + 0.75 * r, cy + 0.9 * r), fill=bg)
    draw.ellipse((cx - 0.45 * r, cy - 0.3 * r, cx + 0.45 * r, cy + 0.6 * r), fill=fill)
    draw.rectangle((cx + 1.0 * r, cy - 0.8 * r, cx + 1.35 * r, cy - 0.55 * r), fill=bg)


def _car(
    draw: ImageDraw.ImageDraw, cx: float, cy: float, r: float, fill: RGB, bg: RGB, outline: bool
) -> None:
    # A side-view silhouette: body, cabin, two wheels. Deliberately iconic, not a render.
    body = [
        (cx - 2.2 * r, cy + 0.1 * r),
        (cx - 2.1 * r, cy - 0.35 * r),
        (cx - 1.0 * r, cy - 0.5 * r),
        (cx - 0.5 * r, cy - 1.1 * r),
        (cx + 0.8 * r, cy - 1.1 * r),
        (cx + 1.4 * r, cy - 0.5 * r),
        (cx + 2.2 * r, cy - 0.3 * r),
        (cx + 2.2 * r, cy + 0.3 * r),
        (cx - 2.2 * r, cy + 0.3 * r),
    ]
    width = max(2, int(r * 0.12))
    if outline:
        draw.polygon(body, outline=fill, width=width)
    else:
        draw.polygon(body, fill=fill)
        draw.polygon(
            [
                (cx - 0.35 * r, cy - 0.95 * r),
                (cx + 0.7 * r, cy - 0.95 * r),
                (cx + 1.1 * r, cy - 0.5 * r),
                (cx - 0.8 * r, cy - 0.5 * r),
            ],
            fill=bg,
        )
    for wx in (cx - 1.3 * r, cx + 1.3 * r):
        draw.ellipse((wx - 0.45 * r, cy - 0.1 * r, wx + 0.45 * r, cy + 0.8 * r), fill=bg)
        draw.ellipse(
            (wx - 0.45 * r, cy - 0.1 * r, wx + 0.45 * r, cy + 0.8 * r), outline=fill, width=width
        )


def _text_card(rng: random.Random, size: tuple[int, int]) -> Image.Image:
    image = _background(rng, size)
    bg = _pixel(image, (0, 0))
    draw = ImageDraw.Draw(image)
    if rng.random() < 0.4:
        inset = rng.randint(4, 30)
        draw.rectangle(
            (inset, inset, size[0] - inset, size[1] - inset),
            outline=_contrast(bg, rng),
            width=rng.randint(1, 6),
        )
    _text(draw, rng, size, rng.choice(PHRASES), _contrast(bg, rng), scale=1.3)
    return image


def _gradient_text(rng: random.Random, size: tuple[int, int]) -> Image.Image:
    image = _gradient(rng, size)
    bg = _pixel(image, (size[0] // 2, size[1] // 2))
    _text(ImageDraw.Draw(image), rng, size, rng.choice(PHRASES), _contrast(bg, rng))
    return image


def _icon_card(rng: random.Random, size: tuple[int, int], kind: str) -> Image.Image:
    image = _background(rng, size) if rng.random() < 0.7 else _gradient(rng, size)
    w, h = size
    bg = _pixel(image, (w // 2, h // 2))
    fg = _contrast(bg, rng) if rng.random() < 0.6 else _color(rng, "grey")
    draw = ImageDraw.Draw(image)
    with_text = rng.random() < 0.7
    cy = h * (0.4 if with_text else 0.5)
    r = min(w, h) * rng.uniform(0.08, 0.18)
    if kind == "camera":
        _camera(draw, w / 2, cy, r, fg, bg)
    else:
        _car(draw, w / 2, cy, r, fg, bg, outline=rng.random() < 0.4)
    if with_text:
        _text(draw, rng, size, rng.choice(PHRASES), fg, center=(0.5, 0.75))
    return image


def _banner(rng: random.Random, size: tuple[int, int]) -> Image.Image:
    w, h = size
    image = _background(rng, size)
    draw = ImageDraw.Draw(image)
    colors = [_color(rng) for _ in range(rng.randint(1, 3))]
    # Dealer frames: a coloured band at the top and/or bottom, maybe a thin accent line.
    y = 0
    for color in colors:
        band = int(h * rng.uniform(0.06, 0.2))
        if rng.random() < 0.5:
            draw.rectangle((0, y, w, y + band), fill=color)
        else:
            draw.rectangle((0, h - y - band, w, h - y), fill=color)
        y += band
    name = f"{rng.choice(('SUNSET', 'METRO', 'RIVERSIDE', 'PREMIER', 'EXPRESS', 'AAA'))} "
    _text(draw, rng, size, name + rng.choice(DEALER_WORDS), _color(rng), center=(0.5, 0.2))
    if rng.random() < 0.6:
        _text(draw, rng, size, rng.choice(PHRASES), _color(rng), center=(0.5, 0.55))
    if rng.random() < 0.5:
        phone = f"({rng.randint(200, 999)}) {rng.randint(200, 999)}-{rng.randint(1000, 9999)}"
        _text(draw, rng, size, phone, _color(rng), center=(0.5, 0.85), scale=0.7)
    return image


def _logo(rng: random.Random, size: tuple[int, int]) -> Image.Image:
    w, h = size
    image = _background(rng, size)
    draw = ImageDraw.Draw(image)
    fg = _color(rng)
    r = min(w, h) * rng.uniform(0.18, 0.35)
    cx, cy = w / 2, h * rng.uniform(0.4, 0.5)
    shape = rng.choice(("circle", "shield", "diamond", "rounded"))
    if shape == "circle":
        draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=fg)
    elif shape == "diamond":
        draw.polygon([(cx, cy - r), (cx + r, cy), (cx, cy + r), (cx - r, cy)], fill=fg)
    elif shape == "shield":
        draw.polygon(
            [(cx - r, cy - r), (cx + r, cy - r), (cx + r, cy), (cx, cy + r), (cx - r, cy)], fill=fg
        )
    else:
        draw.rounded_rectangle((cx - r, cy - r * 0.7, cx + r, cy + r * 0.7), int(r / 3), fill=fg)
    initials = "".join(rng.choice("ABCDEFGHKLMNPRSTVW") for _ in range(rng.randint(1, 3)))
    _text(draw, rng, size, initials, _contrast(fg, rng), center=(cx / w, cy / h), scale=1.8)
    if rng.random() < 0.6:
        _text(draw, rng, size, rng.choice(DEALER_WORDS), fg, center=(0.5, 0.85))
    return image


def _blank(rng: random.Random, size: tuple[int, int]) -> Image.Image:
    image = _background(rng, size) if rng.random() < 0.6 else _gradient(rng, size)
    if rng.random() < 0.3:
        draw = ImageDraw.Draw(image)
        draw.rectangle((0, 0, size[0] - 1, size[1] - 1), outline=_color(rng, "grey"), width=2)
    return image


FAMILIES: Final[dict[str, Callable[[random.Random, tuple[int, int]], Image.Image]]] = {
    "text_card": _text_card,
    "gradient_text": _gradient_text,
    "camera_icon": lambda rng, size: _icon_card(rng, size, "camera"),
    "car_icon": lambda rng, size: _icon_card(rng, size, "car"),
    "banner": _banner,
    "logo": _logo,
    "blank": _blank,
}


def make_placeholder(seed: int, index: int, family: str | None = None) -> Placeholder:
    """Generate image ``index`` of a seeded set.

    Args:
        seed: Set seed.
        index: Position in the set; families cycle with the index.
        family: Force a design family instead of the cyclic one.

    Returns:
        The placeholder; its image went through a JPEG round trip (quality
        60-95), as listing images do.
    """
    names = list(FAMILIES)
    name = family or names[index % len(names)]
    rng = random.Random(f"cartag-placeholder:{seed}:{index}")
    size = rng.choice(SIZES)
    image = FAMILIES[name](rng, size)
    if rng.random() < 0.2:
        image = image.filter(ImageFilter.GaussianBlur(rng.uniform(0.5, 1.5)))
    buffer = BytesIO()
    image.save(buffer, format="JPEG", quality=rng.randint(60, 95))
    buffer.seek(0)
    with Image.open(buffer) as decoded:
        decoded.load()
        rgb = decoded.convert("RGB")
    return Placeholder(id=f"placeholder/{seed}/{index:04d}", family=name, image=rgb)


def generate_placeholders(n: int, seed: int = 0) -> list[Placeholder]:
    """Generate ``n`` placeholders, families in equal shares.

    Args:
        n: Number of images.
        seed: Set seed.
    """
    return [make_placeholder(seed, i) for i in range(n)]
