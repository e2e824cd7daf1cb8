"""The monitor page in a real headless Chromium: it uses the window's width.

At 1400 px the page spreads its panels side by side over the whole window (a screenshot
is kept in the test's folder); at 700 px they stack and nothing overflows sideways.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Page, sync_playwright

from cartag.api.app import create_app
from cartag.clock import FakeClock
from cartag.models.classifier import Classifier
from cartag.settings import Settings
from cartag.store import apikeys
from cartag.store.db import Database
from tests.support.factories import NOW
from tests.support.live_server import serve
from tests.support.monitoring import TODAY, seed_monitoring

pytestmark = pytest.mark.slow


@pytest.fixture
def site(
    settings: Settings, sqlite_db: Database, classifier: Classifier
) -> Iterator[tuple[str, str]]:
    """A served app with a month of monitoring data; its URL and a reviewer key."""
    seed_monitoring(sqlite_db)
    with sqlite_db.write() as session:
        _, key = apikeys.create_key(session, name="olga", roles=["reviewer"], now=NOW)
    clock = FakeClock(dt.datetime.combine(TODAY, dt.time(15), dt.UTC))
    app = create_app(settings, db=sqlite_db, classifier=classifier, clock=clock, run_jobs=False)
    with serve(app) as url:
        yield url, key


def _box(page: Page, selector: str) -> dict[str, Any]:
    box = page.locator(selector).bounding_box()
    assert box is not None, f"{selector} is not shown"
    return dict(box)


def test_the_monitor_page_uses_the_width_of_the_window(
    chromium: str, site: tuple[str, str], tmp_path: Path
) -> None:
    url, key = site
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium, headless=True, args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            errors: list[str] = []
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            page.goto(f"{url}/monitor/login?next=/monitor%3Fsince%3D7d")
            page.fill("input[name=key]", key)
            page.click("button[type=submit]")
            page.wait_for_url(f"{url}/monitor?since=7d")
            page.get_by_text("Request latency and errors").wait_for()
            shot = tmp_path / "monitor-1400.png"
            page.screenshot(path=str(shot), full_page=True)
            assert shot.stat().st_size > 10_000

            main = _box(page, "main")
            assert main["width"] > 1000
            latency, jobs = _box(page, "#panel-latency"), _box(page, "#panel-jobs")
            # Side by side on one row, together spanning the main container.
            assert abs(latency["y"] - jobs["y"]) < 1
            assert jobs["x"] > latency["x"] + latency["width"]
            assert latency["x"] - main["x"] < 2
            assert main["x"] + main["width"] - (jobs["x"] + jobs["width"]) < 2
            row = [_box(page, f"#panel-{p}") for p in ("cache", "fix-rate", "serving")]
            assert len({round(b["y"]) for b in row}) == 1  # three panels on one row
            assert sum(b["width"] for b in row) > 0.9 * main["width"]

            # A narrow window: the panels stack, nothing overflows sideways.
            page.set_viewport_size({"width": 700, "height": 1000})
            latency, jobs = _box(page, "#panel-latency"), _box(page, "#panel-jobs")
            assert jobs["y"] > latency["y"] + latency["height"] - 1
            overflow = page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
            assert overflow <= 0
            assert errors == []
        finally:
            browser.close()
