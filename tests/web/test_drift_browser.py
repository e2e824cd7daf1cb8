"""A simulated shift seen on /monitor in a real headless Chromium.

Two advertisers send real car photos for a week (the model version's baseline), through
the real API, model and rollup, on an injected clock; on the tenth day one of them sends a
batch from a different source (the same kind of photos, grey and blurred, as another
camera pipeline would). The novelty is the model's own, not injected: the monitor's drift
panel must flag that advertiser, and not the other one.
"""

from __future__ import annotations

import datetime as dt
import io
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from PIL import Image, ImageFilter, ImageOps
from playwright.sync_api import sync_playwright

from cartag.api.app import create_app
from cartag.clock import FakeClock
from cartag.models.classifier import Classifier
from cartag.settings import Settings
from cartag.store import apikeys
from cartag.store.db import Database
from tests.support.factories import NOW
from tests.support.http_server import ImageServer
from tests.support.images import real_photos
from tests.support.live_server import serve

pytestmark = pytest.mark.slow

DAY = dt.timedelta(days=1)
START = dt.datetime(2026, 11, 2, 9, 0, tzinfo=dt.UTC)
PER_DAY = 24


def _shifted(path: Path) -> bytes:
    """The photo as another source would send it: grey and blurred."""
    image = ImageOps.grayscale(Image.open(path).convert("RGB")).filter(ImageFilter.GaussianBlur(6))
    out = io.BytesIO()
    image.convert("RGB").save(out, "JPEG", quality=90)
    return out.getvalue()


@pytest.fixture
def images(shared_data: Path) -> Iterator[tuple[ImageServer, dict[str, list[str]]]]:
    photos = real_photos(shared_data, 3 * PER_DAY, seed=5)
    with ImageServer() as server:
        urls: dict[str, list[str]] = {"steady": [], "shifting": [], "shifted": []}
        for i, path in enumerate(photos[:PER_DAY]):
            server.add_file(f"/steady/{i}.jpg", path.read_bytes())
            urls["steady"].append(server.url(f"/steady/{i}.jpg"))
        for i, path in enumerate(photos[PER_DAY : 2 * PER_DAY]):
            server.add_file(f"/shifting/{i}.jpg", path.read_bytes())
            urls["shifting"].append(server.url(f"/shifting/{i}.jpg"))
        for i, path in enumerate(photos[2 * PER_DAY :]):
            server.add_file(f"/new-source/{i}.jpg", _shifted(path))
            urls["shifted"].append(server.url(f"/new-source/{i}.jpg"))
        yield server, urls


def test_monitor_shows_the_drift_of_the_advertiser_whose_photos_changed(
    chromium: str,
    settings: Settings,
    sqlite_db: Database,
    classifier: Classifier,
    images: tuple[ImageServer, dict[str, list[str]]],
    tmp_path: Path,
) -> None:
    assert classifier.reference is not None
    _, urls = images
    settings = settings.model_copy(update={"monitor_flush_s": 0, "drift_min_images": 20})
    with sqlite_db.write() as session:
        _, key = apikeys.create_key(session, name="ops", roles=["admin"], now=NOW)
    clock = FakeClock(START)
    app = create_app(settings, db=sqlite_db, classifier=classifier, clock=clock, run_jobs=False)
    headers = {"Authorization": f"Bearer {key}"}

    def classify(client: httpx.Client, advertiser: str, batch: list[str]) -> None:
        body = {"advertiser_id": advertiser, "images": [{"url": u} for u in batch]}
        answered = client.post("/v1/classify", json=body, headers=headers, timeout=120)
        assert answered.status_code == 200, answered.text
        assert all(r["status"] != "skipped" for r in answered.json()["results"])

    with serve(app) as url:
        with httpx.Client(base_url=url) as client:
            for _ in range(7):  # the version's first week: both advertisers' usual photos
                classify(client, "dealer-steady", urls["steady"])
                classify(client, "dealer-shifting", urls["shifting"])
                clock.advance(DAY.total_seconds())
            clock.advance(2 * DAY.total_seconds())  # day 10
            classify(client, "dealer-steady", urls["steady"])
            classify(client, "dealer-shifting", urls["shifted"])  # another source now

        with sync_playwright() as pw:
            browser = pw.chromium.launch(
                executable_path=chromium, headless=True, args=["--no-sandbox"]
            )
            try:
                page = browser.new_page(viewport={"width": 1400, "height": 1000})
                errors: list[str] = []
                page.on("pageerror", lambda exc: errors.append(str(exc)))
                page.goto(f"{url}/monitor/login?next=/monitor")
                page.fill("input[name=key]", key)
                page.click("button[type=submit]")
                page.wait_for_url(f"{url}/monitor")
                panel = page.locator(f'.drift-version[data-version="{classifier.version}"]')
                panel.wait_for()
                shifting = panel.locator('tr[data-advertiser="dealer-shifting"]')
                steady = panel.locator('tr[data-advertiser="dealer-steady"]')
                assert shifting.get_attribute("data-state") == "drift"
                assert "▲ drift" in shifting.inner_text()
                assert "share of far images" in shifting.inner_text()
                assert steady.get_attribute("data-state") == "ok"
                assert "1 advertiser(s) drifted" in panel.inner_text()
                # The drifted advertiser is listed first, right under the version's own row.
                rows = panel.locator("tbody tr")
                assert rows.nth(1).get_attribute("data-advertiser") == "dealer-shifting"
                shifting.scroll_into_view_if_needed()
                shot = tmp_path / "monitor-drift.png"
                page.screenshot(path=str(shot), full_page=True)
                assert shot.stat().st_size > 10_000
                assert errors == []
            finally:
                browser.close()
