"""The review page in a real headless Chromium against a real uvicorn server.

Log in with a reviewer key, check the grid is sorted by suspicion, review with the keyboard
(accept, relabel, exclude, undo, color mode), then check in the database that every
decision is stored (who, when) and applied to the draft's items.
"""

from __future__ import annotations

import datetime as dt
import os
import re
import shutil
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import uvicorn
from playwright.sync_api import Page, expect, sync_playwright
from sqlalchemy import select

from cartag.api.app import create_app
from cartag.clock import FakeClock
from cartag.models.classifier import Classifier
from cartag.settings import Settings
from cartag.store import apikeys
from cartag.store import review as review_repo
from cartag.store.blobs import LocalBlobStore
from cartag.store.db import Database
from cartag.store.tables import DatasetItemRow
from tests.support.factories import NOW
from tests.web.seed import seed_review

pytestmark = pytest.mark.slow

CHROMIUM = os.environ.get("CARTAG_TEST_CHROMIUM", "/usr/bin/chromium")
START = NOW + dt.timedelta(days=1)


@pytest.fixture
def chromium() -> str:
    """The browser to drive; skipped when absent, except in CI where it must be there."""
    found = shutil.which(CHROMIUM) if not Path(CHROMIUM).is_file() else CHROMIUM
    if found:
        return found
    message = (
        f"chromium not found at {CHROMIUM}: install Debian's chromium "
        "(`bash scripts/setup.sh dev` as root does) or set CARTAG_TEST_CHROMIUM"
    )
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"CI=true but {message}")
    pytest.skip(message)


@dataclass
class Site:
    url: str
    db: Database
    clock: FakeClock
    ref: str
    ids: dict[str, int]
    key: str


@pytest.fixture
def site(settings: Settings, sqlite_db: Database, classifier: Classifier) -> Iterator[Site]:
    """cartag served by uvicorn on a free port, with a seeded draft and a reviewer key."""
    ref, ids = seed_review(sqlite_db, LocalBlobStore(settings.data_dir / "blobs"))
    with sqlite_db.write() as session:
        _, key = apikeys.create_key(session, name="rita", roles=["reviewer"], now=NOW)
    clock = FakeClock(START)
    app = create_app(settings, db=sqlite_db, classifier=classifier, clock=clock, run_jobs=False)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.05)
    try:
        yield Site(f"http://127.0.0.1:{port}", sqlite_db, clock, ref, ids, key)
    finally:
        server.should_exit = True
        thread.join(timeout=30)
        sock.close()


def _card_ids(page: Page) -> list[int]:
    ids = page.locator(".card").evaluate_all("els => els.map(e => Number(e.dataset.id))")
    return [int(i) for i in ids]


def test_review_with_the_keyboard(chromium: str, site: Site) -> None:
    ids = site.ids
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium, headless=True, args=["--no-sandbox"])
        try:
            page = browser.new_page()
            errors: list[str] = []
            page.on("pageerror", lambda exc: errors.append(str(exc)))

            # Not logged in: the page sends the browser to the login form, then back.
            page.goto(f"{site.url}/review/{site.ref}")
            expect(page).to_have_url(f"{site.url}/review/login?next=%2Freview%2Fcars%402")
            page.fill("#key", "ctg_wrong_key")
            page.click("#login")
            expect(page.locator("#login-error")).to_contain_text("unknown API key")
            page.fill("#key", site.key)
            page.click("#login")
            expect(page).to_have_url(f"{site.url}/review/{site.ref}")
            expect(page.locator(".who")).to_contain_text("rita")

            # Most suspicious first; unranked last; the unreadable item is not listed.
            order = ["stock", "flagged", "placeholder", "calm", "unranked"]
            assert _card_ids(page) == [ids[n] for n in order]
            card = {name: page.locator(f"#item-{ids[name]}") for name in order}
            expect(card["stock"]).to_have_class(re.compile(r"\bdisagree\b.*\bfocused\b"))
            expect(card["stock"].locator(".model")).to_have_text("Stock 93%")
            expect(card["stock"].locator(".suspicion")).to_have_text("0.90")
            expect(card["flagged"].locator(".state")).to_contain_text("flagged (conflict)")
            loaded = (
                card["stock"].locator("img").evaluate("img => img.complete && img.naturalWidth")
            )
            assert loaded > 0

            status = page.locator("#status")
            page.keyboard.press("a")  # accept "stock"; focus moves on
            expect(status).to_have_text(f"item {ids['stock']} accepted")
            expect(card["stock"].locator(".decision")).to_have_text("accept by rita")
            expect(card["flagged"]).to_be_focused()

            site.clock.advance(60)
            page.keyboard.press("2")  # relabel "flagged" as Stock
            expect(card["flagged"].locator(".cur-image_type")).to_have_text("Stock")
            expect(card["flagged"].locator(".state")).to_have_text("included")

            site.clock.advance(60)
            page.keyboard.press("3")  # "placeholder" becomes a Placeholder: no color
            expect(card["placeholder"].locator(".label")).to_have_text("Placeholder / —")

            site.clock.advance(60)
            page.keyboard.press("x")  # exclude "calm"
            expect(card["calm"].locator(".state")).to_have_text("excluded (review)")
            expect(card["unranked"]).to_be_focused()

            site.clock.advance(60)
            page.keyboard.press("u")  # undo the exclusion; focus goes back to "calm"
            expect(card["calm"].locator(".state")).to_have_text("included")
            expect(status).to_have_text(f"undid exclude on item {ids['calm']}")
            expect(card["calm"]).to_be_focused()

            page.keyboard.press("k")
            expect(card["placeholder"]).to_be_focused()
            page.keyboard.press("j")
            page.keyboard.press("ArrowRight")
            expect(card["unranked"]).to_be_focused()
            page.keyboard.press("ArrowLeft")
            expect(card["calm"]).to_be_focused()

            # Color mode: "c" then a letter.
            page.goto(f"{site.url}/review/{site.ref}?mode=color")
            expect(page.locator(".legend")).to_contain_text("Burgundy")
            for _ in range(3):
                page.keyboard.press("j")
            calm = page.locator(f"#item-{ids['calm']}")
            expect(calm).to_be_focused()
            site.clock.advance(60)
            page.keyboard.press("c")
            page.keyboard.press("e")
            expect(calm.locator(".cur-color")).to_have_text("Grey")
            # A Placeholder has no color: the refusal is shown, nothing changes.
            page.keyboard.press("k")
            page.keyboard.press("k")
            page.keyboard.press("c")
            page.keyboard.press("r")
            expect(status).to_contain_text("Placeholder, which has no color")
            expect(status).to_have_class("error")
            assert errors == []
        finally:
            browser.close()

    with site.db.read() as session:
        stored = review_repo.decisions(session, site.ref)
        rows = session.scalars(select(DatasetItemRow).where(DatasetItemRow.version_ref == site.ref))
        items = {item.id: item for item in rows}
    minute = dt.timedelta(minutes=1)
    assert [
        (d.item_id, d.action, d.field, d.from_label, d.to_label, d.user, d.created_at)
        for d in stored
    ] == [
        (ids["stock"], "accept", "image_type", "Dealer", "Dealer", "rita", START),
        (ids["flagged"], "relabel", "image_type", "Dealer", "Stock", "rita", START + minute),
        (
            ids["placeholder"],
            "relabel",
            "image_type",
            "Dealer",
            "Placeholder",
            "rita",
            START + 2 * minute,
        ),
        (ids["calm"], "exclude", "image_type", "Dealer", "Dealer", "rita", START + 3 * minute),
        (ids["calm"], "relabel", "color", "Red", "Grey", "rita", START + 5 * minute),
    ]
    assert (stored[3].undone_by, stored[3].undone_at) == ("rita", START + 4 * minute)
    assert all(d.undone_at is None for i, d in enumerate(stored) if i != 3)
    state = {
        name: (items[ids[name]].status, items[ids[name]].image_type, items[ids[name]].color)
        for name in ("stock", "flagged", "placeholder", "calm", "unranked")
    }
    assert state == {
        "stock": ("included", "Dealer", "Red"),
        "flagged": ("included", "Stock", "Red"),
        "placeholder": ("included", "Placeholder", None),
        "calm": ("included", "Dealer", "Grey"),
        "unranked": ("included", "Stock", "White"),
    }
