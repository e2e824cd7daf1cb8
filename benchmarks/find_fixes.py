"""pipeline.fixes.find_fixes alone: which fixes apply to a listing's or a classify's images.

Builds a throw-away store and times ``find_fixes`` (best of ``--repeats``, one read
session) on the inventories that call it:

* the fix page's listing: ``--images`` images of one advertiser with random pHashes, one
  in ten fixed (the store of :mod:`benchmarks.advertiser_listing`), identical pHashes only
  (``max_distance`` 0) and near ones (3, ``CARTAG_PHASH_MAX_DISTANCE``'s ceiling);
* a classify's cached batch of 1,000 images when the advertiser and the global scope hold
  no fix, 20 fixes, or 2,000 (some of them the batch's own images or near copies), and
  when the global scope holds the listing's global fixes;
* a placeholder card: ``--images``/10 images of the same card (0-1 bits apart), 1,000 of
  them fixed (each image shares its bands with every fix).

Usage::

    .venv/bin/python -m benchmarks.find_fixes [--images 50000] [--repeats 5]
"""

from __future__ import annotations

import argparse
import random
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from benchmarks.advertiser_listing import ADVERTISER, NOW, _database
from benchmarks.advertiser_listing import seed as seed_listing
from cartag.pipeline.fixes import find_fixes
from cartag.store import advertisers as advertiser_repo
from cartag.store import fixes as fix_repo
from cartag.store import images as image_repo
from cartag.store.db import Database


def _images(db: Database, phashes: Sequence[str], prefix: str) -> list[tuple[str, str | None]]:
    """Store images with these pHashes; returns their ``(image_key, phash)`` pairs."""
    images = [
        image_repo.NewImage(
            image_key=f"v1:{prefix}{i:060x}",
            url=f"https://cdn.example/{prefix}{i}.jpg",
            content_sha256=f"{prefix}{i:060x}",
            phash=ph,
            width=1024,
            height=768,
            byte_size=90_000,
            image_type="Placeholder",
            color=None,
            type_scores=None,
            color_scores=None,
            confidence=0.9,
            model_version="bench",
        )
        for i, ph in enumerate(phashes)
    ]
    with db.write() as session:
        for start in range(0, len(images), 1000):
            image_repo.save_images(session, images[start : start + 1000], NOW)
    return [(image.image_key, image.phash) for image in images]


def _fix(db: Database, keys: Sequence[str], scope_key: str) -> None:
    with db.write() as session:
        stored = image_repo.get_images(session, keys)
        for key in keys:
            fix_repo.save_fix(
                session,
                image=stored[key],
                scope=fix_repo.GLOBAL if scope_key == "" else fix_repo.ADVERTISER,
                scope_key=scope_key,
                image_type="Placeholder",
                color=None,
                user="bench",
                now=NOW,
            )


def _near(rng: random.Random, value: int, bits: int) -> str:
    for bit in rng.sample(range(64), bits):
        value ^= 1 << bit
    return f"{value:016x}"


def best_ms(
    db: Database, advertiser: str, images: list[tuple[str, str | None]], md: int, n: int
) -> str:
    best, found = float("inf"), 0
    with db.read() as session:
        for _ in range(n):
            started = time.perf_counter()
            found = len(find_fixes(session, advertiser, images, max_distance=md))
            best = min(best, time.perf_counter() - started)
    return f"{best * 1000:.1f} ms ({found} images with a fix)"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=50_000)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    rng = random.Random(0)
    with tempfile.TemporaryDirectory() as tmp, _database(None, Path(tmp)) as db:
        print(f"find_fixes, SQLite, best of {args.repeats}:")
        # A classify's batch first, while the store holds no global fix.
        batch = _images(db, [f"{rng.getrandbits(64):016x}" for _ in range(1000)], "b")
        print("  classify batch of 1,000, no fix:", best_ms(db, "nobody", batch, 3, args.repeats))
        _fix(db, [key for key, _ in batch[:20]], "few")
        print("  classify batch of 1,000, 20 fixes:", best_ms(db, "few", batch, 3, args.repeats))
        copies = _images(db, [_near(rng, int(ph or "0", 16), 1) for _, ph in batch[:500]], "c")
        others = _images(db, [f"{rng.getrandbits(64):016x}" for _ in range(1500)], "o")
        _fix(db, [key for key, _ in copies + others], "many")
        print(
            "  classify batch of 1,000, 2,000 fixes:", best_ms(db, "many", batch, 3, args.repeats)
        )
        print(
            "  classify of 1 image, 2,000 fixes:", best_ms(db, "many", batch[:1], 3, args.repeats)
        )

        seed_listing(db, args.images, random.Random(0))
        with db.read() as session:
            rows = advertiser_repo.advertiser_answers(session, ADVERTISER)
        listing = [(row.image_key, row.phash) for row in rows]
        for md in (0, 3):
            print(f"  listing of {len(listing)} images, max_distance {md}: ", end="", flush=True)
            print(best_ms(db, ADVERTISER, listing, md, args.repeats))
        print(
            f"  classify batch of 1,000, {args.images // 20} global fixes:",
            best_ms(db, "nobody", batch, 3, args.repeats),
        )

        card = rng.getrandbits(64)
        phashes = [_near(rng, card, rng.choice((0, 1))) for _ in range(args.images // 10)]
        cards = _images(db, phashes, "p")
        _fix(db, [key for key, _ in cards[:1000]], "cards")
        print(
            f"  {len(cards)} images of one placeholder card, 1,000 fixed:",
            best_ms(db, "cards", cards, 3, min(args.repeats, 2)),
        )


if __name__ == "__main__":
    main()
