"""GET /fix, the fix pages' index for staff: its size and time with many advertisers.

Builds a throw-away SQLite store with ``--advertisers`` advertisers (two images each, one
override in ten), logs a staff fixer key in through ``/fix/login`` as a browser does, and
times the index (best of ``--repeats``), a search by id and a later page. Before the index
had pages every advertiser was one row of a single page: 20,000 made a 4.8 MB page.

Usage::

    .venv/bin/python -m benchmarks.fix_index [--advertisers 20000] [--repeats 5]
"""

from __future__ import annotations

import argparse
import datetime as dt
import re
import tempfile
import time
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

from cartag.api.app import create_app
from cartag.models.classifier import load_classifier
from cartag.settings import Settings
from cartag.store import advertisers as advertiser_repo
from cartag.store import apikeys
from cartag.store import fixes as fix_repo
from cartag.store import images as image_repo
from cartag.store.db import Database, upgrade

if TYPE_CHECKING:
    from fastapi.testclient import TestClient

NOW = dt.datetime(2026, 12, 8, tzinfo=dt.UTC)


def seed(db: Database, count: int) -> str:
    """``count`` advertisers sharing 1,000 images, two each; returns a staff fixer key."""
    images = [
        image_repo.NewImage(
            image_key=f"v1:{i:064x}",
            url=f"https://cdn.example/{i}.jpg",
            content_sha256=f"{i:064x}",
            phash=f"{i:016x}",
            width=1024,
            height=768,
            byte_size=90_000,
            image_type="Dealer",
            color="Grey",
            type_scores=None,
            color_scores=None,
            confidence=0.9,
            model_version="bench",
        )
        for i in range(1000)
    ]
    with db.write() as session:
        image_repo.save_images(session, images, NOW)
        stored = image_repo.get_images(session, [image.image_key for image in images])
        for n in range(count):
            advertiser = f"dealer-{n:05d}"
            keys = [images[n % 1000].image_key, images[(n * 7 + 1) % 1000].image_key]
            advertiser_repo.record_advertiser_images(
                session, advertiser, dict.fromkeys(keys), NOW + dt.timedelta(seconds=n)
            )
            if n % 10 == 0:
                fix_repo.save_fix(
                    session,
                    image=stored[keys[0]],
                    scope=fix_repo.ADVERTISER,
                    scope_key=advertiser,
                    image_type="Stock",
                    color=None,
                    user="bench",
                    now=NOW,
                )
        _, key = apikeys.create_key(session, name="staff", roles=["fixer"], now=NOW)
    return key


def best(client: TestClient, path: str, repeats: int) -> tuple[float, int]:
    """The best time of ``repeats`` GETs of ``path`` (ms) and the page's size (bytes)."""
    fastest, size = float("inf"), 0
    for _ in range(repeats):
        started = time.perf_counter()
        page = client.get(path)
        fastest = min(fastest, time.perf_counter() - started)
        assert page.status_code == 200, (path, page.status_code, page.text[:300])
        size = len(page.content)
    return fastest * 1000, size


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--advertisers", type=int, default=20_000)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    with warnings.catch_warnings():
        # Starlette's nudge towards httpx2, which the tests ignore too.
        warnings.filterwarnings("ignore", "Using `httpx` with `starlette.testclient`")
        from fastapi.testclient import TestClient
    with tempfile.TemporaryDirectory() as tmp:
        settings = Settings(data_dir=Path(tmp) / "data")
        db = Database(settings.resolved_database_url)
        upgrade(db)
        key = seed(db, args.advertisers)
        app = create_app(settings, db=db, classifier=load_classifier(settings), run_jobs=False)
        with TestClient(app) as client:
            form = client.get("/fix/login").text
            found = re.search(r'name="csrf" value="([^"]*)"', form)
            assert found is not None
            login = client.post(
                "/fix/login", data={"key": key, "csrf": found.group(1)}, follow_redirects=False
            )
            assert login.status_code == 303, login.text
            print(f"GET /fix as staff, {args.advertisers} advertisers (best of {args.repeats}):")
            for name, path in (
                ("index", "/fix"),
                ("search q=dealer-1234", "/fix?q=dealer-1234"),
                ("page 100", "/fix?page=100"),
            ):
                ms, size = best(client, path, args.repeats)
                print(f"  {name}: {ms:.0f} ms, {size / 1000:.1f} KB")
        db.dispose()


if __name__ == "__main__":
    main()
