"""GET /v1/advertisers/{id}/images: how long one page takes for a large advertiser.

The listing orders, filters and counts every image of the advertiser from a light row
(its stored answer and the fixes that apply: overrides, global fixes, near duplicates by
pHash) and resolves in full only the page's images; the light pass still grows with the
advertiser's image count. This builds a throw-away store with
``--images`` images for one advertiser (a fifth of them unsure, one in ten fixed: half
overrides, half global), then times the default page, a filtered page and the advertiser
counts (best of ``--repeats``).

Usage::

    .venv/bin/python -m benchmarks.advertiser_listing [--images 20000] [--database URL]

``--database postgresql+psycopg://...`` works in a private schema, dropped at the end.
"""

from __future__ import annotations

import argparse
import datetime as dt
import random
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy import create_engine, text

from cartag.pipeline.inventory import ImageFilter, list_images
from cartag.store import advertisers as advertiser_repo
from cartag.store import fixes as fix_repo
from cartag.store import images as image_repo
from cartag.store.db import Database, upgrade

NOW = dt.datetime(2026, 12, 8, tzinfo=dt.UTC)
ADVERTISER = "dealer-42"


def seed(db: Database, count: int, rng: random.Random) -> None:
    """``count`` images of one advertiser, a tenth of them fixed."""
    images = [
        image_repo.NewImage(
            image_key=f"v1:{i:064x}",
            url=f"https://cdn.example/{i}.jpg",
            content_sha256=f"{i:064x}",
            phash=f"{rng.getrandbits(64):016x}",
            width=1024,
            height=768,
            byte_size=90_000,
            image_type=rng.choice(("Dealer", "Dealer", "Dealer", "Stock", "Placeholder")),
            color=rng.choice(("Black", "White", "Grey", "Blue", "Red")),
            type_scores=None,
            color_scores=None,
            confidence=rng.uniform(0.3, 0.8) if rng.random() < 0.2 else rng.uniform(0.8, 1.0),
            model_version="bench",
        )
        for i in range(count)
    ]
    with db.write() as session:
        for start in range(0, count, 1000):
            image_repo.save_images(session, images[start : start + 1000], NOW)
        advertiser_repo.record_advertiser_images(
            session, ADVERTISER, {image.image_key: image.url for image in images}, NOW
        )
        stored = image_repo.get_images(session, [image.image_key for image in images[::10]])
        for n, row in enumerate(stored.values()):
            scope = fix_repo.ADVERTISER if n % 2 else fix_repo.GLOBAL
            fix_repo.save_fix(
                session,
                image=row,
                scope=scope,
                scope_key=fix_repo.scope_key(scope, ADVERTISER),
                image_type="Dealer",
                color=None,
                user=f"fixer-{n % 3}",
                now=NOW,
            )


@contextmanager
def _database(url: str | None, tmp: Path) -> Iterator[Database]:
    """A migrated store: SQLite under ``tmp``, or a private schema of the server at ``url``
    (dropped afterwards, so a shared server keeps nothing of the benchmark)."""
    if url is None or not url.startswith("postgresql"):
        db = Database(url or f"sqlite:///{tmp / 'bench.db'}")
        upgrade(db)
        try:
            yield db
        finally:
            db.dispose()
        return
    schema = f"bench_{uuid.uuid4().hex[:12]}"
    admin = create_engine(url)
    with admin.begin() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    db = Database(url, connect_args={"options": f"-csearch_path={schema}"})
    try:
        upgrade(db)
        yield db
    finally:
        db.dispose()
        with admin.begin() as conn:
            conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


def best_ms(run: Callable[[], object], repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        run()
        best = min(best, time.perf_counter() - started)
    return best * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=20_000)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--database", help="A database URL (default: SQLite in a temp dir).")
    parser.add_argument("--max-distance", type=int, default=3, help="CARTAG_PHASH_MAX_DISTANCE")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp, _database(args.database, Path(tmp)) as db:
        seed(db, args.images, random.Random(0))
        if db.dialect == "postgresql":
            # What autovacuum does after a bulk load: without statistics the planner
            # picks plans fit for empty tables.
            with db.engine.begin() as conn:
                conn.execute(text("ANALYZE"))
        cases: dict[str, Callable[[], object]] = {
            "first page (60, unsure first)": lambda: list_images(
                db, ADVERTISER, ImageFilter(), max_distance=args.max_distance
            ),
            "unsure, not fixed, page 3": lambda: list_images(
                db,
                ADVERTISER,
                ImageFilter(low_confidence=True, fixed=False),
                page=3,
                max_distance=args.max_distance,
            ),
            "every advertiser's counts (advertiser_summaries)": lambda: _summaries(db),
        }
        print(f"{args.images} images of one advertiser, {db.dialect}:")
        for name, run in cases.items():
            print(f"  {name}: {best_ms(run, args.repeats):.0f} ms (best of {args.repeats})")


def _summaries(db: Database) -> object:
    with db.read() as session:
        return advertiser_repo.advertiser_summaries(session)


if __name__ == "__main__":
    main()
