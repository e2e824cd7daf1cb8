"""A small frozen dataset of real-ish listing images for sweep tests.

Dealer photos (a car-coloured body on a textured outdoor scene), Stock renders
(the body on a white studio background) and Placeholder cards, with type and color
labels, a train split, a test split and an advertiser test set.
"""

from __future__ import annotations

import hashlib
import io
import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

import numpy as np
from PIL import Image, ImageDraw

from cartag.clock import Clock
from cartag.imaging.decode import decode_image
from cartag.models.classifier import Classifier, EmbeddingClassifier
from cartag.settings import Settings
from cartag.store import datasets
from cartag.store.blobs import LocalBlobStore
from cartag.store.db import Database
from cartag.store.embeddings import save_embeddings
from tests.support.images import placeholder_png

BODY_COLORS: Final[dict[str, tuple[int, int, int]]] = {
    "Red": (200, 30, 30),
    "Blue": (30, 60, 200),
    "Black": (20, 20, 22),
    "White": (240, 240, 240),
}


@dataclass(frozen=True)
class Example:
    data: bytes
    image_type: str
    color: str | None
    split: str


def _jpeg(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=90)
    return buffer.getvalue()


def _car(draw: ImageDraw.ImageDraw, rng: random.Random, color: tuple[int, int, int]) -> None:
    x, y = rng.randint(20, 50), rng.randint(70, 100)
    w = rng.randint(150, 190)
    jitter = tuple(max(0, min(255, c + rng.randint(-15, 15))) for c in color)
    draw.rounded_rectangle((x, y, x + w, y + 50), 12, fill=jitter)  # body
    draw.rounded_rectangle((x + 30, y - 30, x + w - 40, y + 5), 10, fill=jitter)  # cabin
    draw.rectangle((x + 40, y - 24, x + w - 50, y - 2), fill=(150, 180, 200))  # windows
    for cx in (x + 35, x + w - 35):
        draw.ellipse((cx - 16, y + 34, cx + 16, y + 66), fill=(15, 15, 15))  # wheels


def dealer_photo(color: str, seed: int) -> bytes:
    """A car of ``color`` parked outdoors: sky, trees, asphalt, sensor noise."""
    rng = random.Random(seed)
    image = Image.new("RGB", (256, 192))
    draw = ImageDraw.Draw(image)
    draw.rectangle((0, 0, 256, 80), fill=(120 + rng.randint(-20, 20), 170, 220))
    for _ in range(8):
        tx = rng.randint(0, 256)
        draw.ellipse((tx - 25, 30, tx + 25, 100), fill=(40, 110 + rng.randint(-20, 20), 40))
    draw.rectangle((0, 120, 256, 192), fill=(90, 90, 95))
    _car(draw, rng, BODY_COLORS[color])
    noise = np.random.default_rng(seed).normal(0, 12, (192, 256, 3))
    pixels = np.clip(np.asarray(image, dtype=np.float64) + noise, 0, 255).astype(np.uint8)
    return _jpeg(Image.fromarray(pixels))


def stock_render(color: str, seed: int) -> bytes:
    """A clean render of a car of ``color`` on a white studio background."""
    rng = random.Random(seed)
    image = Image.new("RGB", (256, 192), (255, 255, 255))
    draw = ImageDraw.Draw(image)
    draw.ellipse((30, 150, 230, 170), fill=(225, 225, 225))  # soft floor shadow
    _car(draw, rng, BODY_COLORS[color])
    return _jpeg(image)


def placeholder_card(seed: int) -> bytes:
    texts = ("Image coming soon", "No photo available", "Photos to follow", "Call for pictures")
    data = placeholder_png(texts[seed % len(texts)], size=(256 + 8 * (seed % 5), 192))
    with Image.open(io.BytesIO(data)) as image:
        return _jpeg(image.convert("RGB"))


def examples(seed: int = 0) -> list[Example]:
    """About 50 labelled images: ~60% train, ~30% test, a 5-image advertiser test set."""
    out: list[Example] = []
    n = 0

    def split(i: int) -> str:
        return "test" if i % 3 == 2 else "train"

    for color in ("Red", "Blue", "Black", "White"):
        for i in range(6):
            n += 1
            out.append(Example(dealer_photo(color, seed * 1000 + n), "Dealer", color, split(i)))
    for color in ("Red", "Blue"):
        for i in range(6):
            n += 1
            out.append(Example(stock_render(color, seed * 1000 + n), "Stock", color, split(i)))
    for i in range(6):
        out.append(Example(placeholder_card(seed * 100 + i), "Placeholder", None, split(i)))
    for i, (kind, color) in enumerate(
        [
            ("Dealer", "Red"),
            ("Dealer", "Blue"),
            ("Stock", "Red"),
            ("Dealer", "Black"),
            ("Stock", "Blue"),
        ]
    ):
        n += 1
        make = dealer_photo if kind == "Dealer" else stock_render
        out.append(Example(make(color, seed * 1000 + 500 + i), kind, color, "test:advertiser=42"))
    return out


def make_frozen_dataset(
    db: Database,
    settings: Settings,
    clock: Clock,
    items: Sequence[Example],
    *,
    name: str = "cars",
    freeze: bool = True,
) -> str:
    """Store the images as blobs and create (and freeze) a dataset version; returns its ref."""
    blobs = LocalBlobStore(settings.data_dir / "blobs")
    new_items = []
    for example in items:
        path = blobs.put(example.data, "jpg")
        sha = path.rsplit("/", 1)[1].split(".")[0]
        new_items.append(
            datasets.NewItem(
                content_sha256=sha,
                blob_path=path,
                image_type=example.image_type,
                color=example.color,
                split=example.split,
                group_key=f"g-{sha[:12]}",
                provenance={"source": "import"},
            )
        )
    with db.write() as session:
        version = datasets.create_version(
            session,
            name,
            created_by="test",
            now=clock.now(),
            test_sets=[{"name": "advertiser=42", "advertiser_id": "42"}],
        )
        ref = version.ref
        datasets.add_items(session, ref, new_items)
        if freeze:
            datasets.freeze(session, ref, clock.now())
    return ref


def cache_embeddings(
    db: Database, backbone_id: str, vectors: dict[str, np.ndarray], clock: Clock
) -> None:
    """Put precomputed embeddings into the store's cache."""
    with db.write() as session:
        save_embeddings(session, backbone_id, vectors, clock.now())


def embed_examples(classifier: Classifier, items: Sequence[Example]) -> dict[str, np.ndarray]:
    """Real backbone embeddings of the examples by content hash (the service's decoding)."""
    assert isinstance(classifier, EmbeddingClassifier)
    draft = classifier.draft_size()
    images = [decode_image(e.data, max_pixels=64_000_000, draft_size=draft).image for e in items]
    vectors = classifier.backbone.embed_images(images)
    return {hashlib.sha256(e.data).hexdigest(): v for e, v in zip(items, vectors, strict=True)}
