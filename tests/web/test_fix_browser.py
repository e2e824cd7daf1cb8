"""The fix page in a real headless Chromium against a real uvicorn server.

A key scoped to dealer-42 logs in, sees only dealer-42's images (unsure first, thumbnails
made from the image server, a no-preview note for a URL that needed a password), fixes
one with the keyboard, one with a tap, one with the color menu, reads an image's history,
and is refused another advertiser's page and a global fix. Staff (an unscoped key) fix
globally. The database's audit names the keys.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
from collections.abc import Iterator

import pytest
from playwright.sync_api import Page, expect, sync_playwright
from sqlalchemy import select

from cartag.api.app import create_app
from cartag.clock import FakeClock
from cartag.models.classifier import Classifier
from cartag.settings import Settings
from cartag.store import advertisers as advertiser_repo
from cartag.store import apikeys
from cartag.store.db import Database
from cartag.store.tables import FixAuditRow
from tests.support.factories import NOW, add_image
from tests.support.http_server import ImageServer
from tests.support.images import jpeg_bytes
from tests.support.live_server import find_chromium, serve

pytestmark = pytest.mark.slow

START = NOW + dt.timedelta(days=1)
MINUTE = dt.timedelta(minutes=1)


@dataclasses.dataclass
class Site:
    url: str
    db: Database
    clock: FakeClock
    keys: dict[str, str]  # image keys by name
    dana: str  # a fixer key scoped to dealer-42
    dana_id: int
    staff: str  # an unscoped fixer key


@pytest.fixture
def site(settings: Settings, sqlite_db: Database, classifier: Classifier) -> Iterator[Site]:
    """dealer-42's four images (one behind a password), dealer-77's one, two fixer keys."""
    with ImageServer() as images:
        photos = {
            name: jpeg_bytes(width=640, height=480, color=rgb)
            for name, rgb in (
                ("low", (200, 30, 30)),
                ("mid", (240, 240, 240)),
                ("sure", (20, 20, 20)),
                ("other", (30, 30, 200)),
            )
        }
        rows = {}
        # pHashes 32 bits apart: no fix of one applies to another.
        hashes = dict(
            zip(
                photos,
                ("f0f0f0f0f0f0f0f0", "0f0f0f0f0f0f0f0f", "ff00ff00ff00ff00", "00ff00ff00ff00ff"),
                strict=True,
            )
        )
        for name, data in photos.items():
            images.add_file(f"/{name}.jpg", data)
            rows[name] = add_image(
                sqlite_db,
                url=images.url(f"/{name}.jpg"),
                content_sha256=hashlib.sha256(data).hexdigest(),
                phash=hashes[name],
                **{
                    "low": {"confidence": 0.35},
                    "mid": {"confidence": 0.6, "image_type": "Stock", "color": "White"},
                    "sure": {"confidence": 0.97, "color": "Black"},
                    "other": {},
                }[name],
            )
        rows["secret"] = add_image(
            sqlite_db,
            url="https://alice:***@cdn.example/private.jpg",
            confidence=0.99,
            phash="aaaaaaaaaaaaaaaa",
        )
        keys = {name: row.image_key for name, row in rows.items()}
        with sqlite_db.write() as session:
            mine = [keys[n] for n in ("low", "mid", "sure", "secret")]
            advertiser_repo.record_advertiser_images(session, "dealer-42", dict.fromkeys(mine), NOW)
            advertiser_repo.record_advertiser_images(
                session, "dealer-77", dict.fromkeys([keys["other"]]), NOW
            )
            dana_row, dana = apikeys.create_key(
                session, name="dana", roles=["fixer"], now=NOW, advertisers=["dealer-42"]
            )
            _, staff = apikeys.create_key(session, name="staff", roles=["fixer"], now=NOW)
        clock = FakeClock(START)
        app = create_app(settings, db=sqlite_db, classifier=classifier, clock=clock, run_jobs=False)
        with serve(app) as url:
            yield Site(url, sqlite_db, clock, keys, dana, dana_row.id, staff)


def _log_in(page: Page, site: Site, key: str) -> None:
    page.goto(f"{site.url}/fix")
    expect(page).to_have_url(f"{site.url}/fix/login?next=%2Ffix")
    page.fill("#key", key)
    page.click("#login")


def test_fix_with_keyboard_tap_and_menu(site: Site) -> None:
    with sync_playwright() as pw:
        browser = pw.chromium.launch(
            executable_path=find_chromium(), headless=True, args=["--no-sandbox"]
        )
        try:
            # A touch screen: taps, and the keyboard of a tablet's cover.
            page = browser.new_context(has_touch=True).new_page()
            errors: list[str] = []
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            _log_in(page, site, site.dana)
            # A key scoped to one advertiser goes straight to its page.
            expect(page).to_have_url(f"{site.url}/fix/dealer-42")
            expect(page.locator(".who")).to_contain_text("dana")
            order = page.locator(".card").evaluate_all("els => els.map(e => e.dataset.key)")
            assert order == [site.keys[n] for n in ("low", "mid", "sure", "secret")]
            low, mid, sure, secret = (
                page.locator(f'.card[data-key="{site.keys[n]}"]')
                for n in ("low", "mid", "sure", "secret")
            )
            expect(low.locator(".badge")).to_have_text("unsure")
            expect(low.locator("img")).to_have_js_property("complete", True)
            size = low.locator("img").evaluate("img => [img.naturalWidth, img.naturalHeight]")
            assert min(size) >= 128 and max(size) <= 256, size
            expect(secret.locator(".nothumb")).to_contain_text("needed a password")
            expect(secret.locator(".url")).to_have_text("https://alice:***@cdn.example/private.jpg")
            assert page.locator("input[name=scope]").count() == 0  # no global fixes

            status = page.locator("#status")
            expect(low).to_be_focused()
            page.keyboard.press("2")  # the type, with a key
            expect(low.locator(".cur-type")).to_have_text("Stock")
            expect(low.locator(".src-type")).to_have_text("override")
            expect(low.locator(".fixed-by")).to_have_text("fixed by dana (override)")
            expect(status).to_contain_text("for dealer-42")
            expect(low.locator(".badge")).to_have_count(0)

            site.clock.advance(60)
            page.keyboard.press("j")
            expect(mid).to_be_focused()
            page.keyboard.press("c")
            page.keyboard.press("e")  # the color, with keys
            expect(mid.locator(".cur-color")).to_have_text("Grey")

            site.clock.advance(60)
            sure.locator('.set-type[data-value="Stock"]').tap()  # the type, with a tap
            expect(sure.locator(".cur-type")).to_have_text("Stock")
            expect(sure.locator('.set-type[data-value="Stock"]')).to_have_attribute(
                "aria-pressed", "true"
            )
            site.clock.advance(60)
            sure.locator(".set-color").select_option("Blue")  # the color, from the menu
            expect(sure.locator(".cur-color")).to_have_text("Blue")
            expect(sure.locator(".chip")).to_have_class("chip c-Blue")

            # The history of the first image, then back to the grid.
            low.click()
            page.keyboard.press("h")
            history = page.locator("#history")
            expect(history).to_be_visible()
            expect(history.locator(".history-model")).to_contain_text("The model said Dealer")
            expect(history.locator(".history-entries li")).to_have_count(1)
            expect(history.locator(".history-entries")).to_contain_text(
                "dana · override dealer-42 · image_type Dealer → Stock"
            )
            page.keyboard.press("Escape")
            expect(history).to_be_hidden()

            # Not this key's advertiser, nor a global fix.
            refused = page.evaluate(
                """async (key) => {
                    const r = await fetch("/v1/images/" + encodeURIComponent(key) + "/fix", {
                        method: "PUT", credentials: "same-origin",
                        headers: {"Content-Type": "application/json", "X-Cartag-CSRF": "1"},
                        body: JSON.stringify({advertiser_id: "dealer-42", scope: "global",
                                              image_type: "Dealer"})});
                    return [r.status, (await r.json()).error.message];
                }""",
                site.keys["low"],
            )
            assert refused[0] == 403 and "unscoped" in refused[1]
            response = page.goto(f"{site.url}/fix/dealer-77")
            assert response is not None and response.status == 403
            expect(page.locator("#page-error")).to_contain_text("scoped to dealer-42")
            assert site.keys["other"] not in page.content()
            assert errors == []

            # Staff: every advertiser, and global fixes.
            page.context.clear_cookies()
            _log_in(page, site, site.staff)
            expect(page).to_have_url(f"{site.url}/fix")
            expect(page.locator("table.advertisers")).to_contain_text("dealer-77")
            page.click("a.open >> nth=0")
            expect(page).to_have_url(f"{site.url}/fix/dealer-42")
            page.locator(f'.card[data-key="{site.keys["mid"]}"]').click()
            page.keyboard.press("g")
            expect(status).to_contain_text("global")
            site.clock.advance(60)
            page.keyboard.press("1")
            expect(status).to_contain_text("globally")
            assert errors == []
        finally:
            browser.close()

    with site.db.read() as session:
        audit = session.scalars(select(FixAuditRow).order_by(FixAuditRow.id)).all()
        rows = [
            (a.image_key, a.user, a.key_id, a.scope, a.advertiser_id, a.changes, a.created_at)
            for a in audit
        ]
    k = site.keys
    assert rows[:4] == [
        (
            k["low"],
            "dana",
            site.dana_id,
            "advertiser",
            "dealer-42",
            {"image_type": {"from": "Dealer", "to": "Stock"}},
            START,
        ),
        (
            k["mid"],
            "dana",
            site.dana_id,
            "advertiser",
            "dealer-42",
            {"color": {"from": "White", "to": "Grey"}},
            START + MINUTE,
        ),
        (
            k["sure"],
            "dana",
            site.dana_id,
            "advertiser",
            "dealer-42",
            {"image_type": {"from": "Dealer", "to": "Stock"}},
            START + 2 * MINUTE,
        ),
        (
            k["sure"],
            "dana",
            site.dana_id,
            "advertiser",
            "dealer-42",
            {"color": {"from": "Black", "to": "Blue"}},
            START + 3 * MINUTE,
        ),
    ]
    assert [(r[0], r[1], r[3]) for r in rows[4:]] == [(k["mid"], "staff", "global")]


def test_staff_page_through_and_search_the_advertisers(site: Site) -> None:
    with sync_playwright() as pw:
        browser = pw.chromium.launch(
            executable_path=find_chromium(), headless=True, args=["--no-sandbox"]
        )
        try:
            page = browser.new_page()
            errors: list[str] = []
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            _log_in(page, site, site.staff)
            expect(page).to_have_url(f"{site.url}/fix")
            # Two advertisers fit a page: the table as it always was, no search, no pager.
            expect(page.locator("table.advertisers tbody tr")).to_have_count(2)
            expect(page.locator("form.search")).to_have_count(0)
            page.goto(f"{site.url}/fix?limit=1")  # one a page: two pages
            expect(page.locator("table.advertisers code")).to_have_text(["dealer-42"])
            expect(page.locator(".pager")).to_contain_text("page 1 of 2")
            page.click("#next-page")
            expect(page).to_have_url(f"{site.url}/fix?limit=1&page=2")
            expect(page.locator("table.advertisers code")).to_have_text(["dealer-77"])
            page.fill("#q", "  42")
            page.keyboard.press("Enter")
            expect(page).to_have_url(f"{site.url}/fix?q=++42&limit=1")  # as typed, spaces too
            expect(page.locator("table.advertisers code")).to_have_text(["dealer-42"])
            expect(page.locator("#advertiser-count")).to_contain_text("1 of 2 advertisers")
            page.fill("#q", "<b>nobody</b>")
            page.keyboard.press("Enter")
            no_match = page.locator("#no-match")
            expect(no_match).to_have_text("No advertiser id holds “<b>nobody</b>”.")  # as text
            page.click("text=all advertisers")
            expect(page.locator("table.advertisers code")).to_have_text(["dealer-42"])
            page.click("a.open")
            expect(page).to_have_url(f"{site.url}/fix/dealer-42")
            assert errors == []
        finally:
            browser.close()
