"""The review page in a real headless Chromium against a real uvicorn server.

Log in with a reviewer key, then review the type queue by keyboard, mouse and touch:
decided items leave the to-review queue, the progress follows, the next-page key skips
nothing, opening the queue again resumes after the last decision, ``?page=999`` shows the
last page; the color queue shows only color suspicions and who said what in a conflict.
Finally check in the database that every decision is stored (who, when) and applied.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
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
from tests.support.live_server import serve
from tests.web.seed import seed_queues

pytestmark = pytest.mark.slow

START = NOW + dt.timedelta(days=1)


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
    ref, ids = seed_queues(sqlite_db, LocalBlobStore(settings.data_dir / "blobs"))
    with sqlite_db.write() as session:
        _, key = apikeys.create_key(session, name="rita", roles=["reviewer"], now=NOW)
    clock = FakeClock(START)
    app = create_app(settings, db=sqlite_db, classifier=classifier, clock=clock, run_jobs=False)
    with serve(app) as url:
        yield Site(url, sqlite_db, clock, ref, ids, key)


def _card_ids(page: Page) -> list[int]:
    ids = page.locator(".card:visible").evaluate_all("els => els.map(e => Number(e.dataset.id))")
    return [int(i) for i in ids]


def _button_keys(page: Page) -> set[str]:
    keys = page.locator("#actions button").evaluate_all("els => els.map(e => e.dataset.key)")
    return {str(k) for k in keys}


def test_review_by_keyboard_mouse_and_touch(chromium: str, site: Site) -> None:
    ids, ref, url = site.ids, site.ref, site.url
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium, headless=True, args=["--no-sandbox"])
        try:
            context = browser.new_context(has_touch=True, viewport={"width": 1280, "height": 900})
            page = context.new_page()
            errors: list[str] = []
            page.on("pageerror", lambda exc: errors.append(str(exc)))

            # Not logged in: the page sends the browser to the login form, then back.
            page.goto(f"{url}/review/{ref}?limit=3")
            expect(page).to_have_url(f"{url}/review/login?next=%2Freview%2Fcars%402%3Flimit%3D3")
            page.fill("#key", "ctg_wrong_key")
            page.click("#login")
            expect(page.locator("#login-error")).to_contain_text("unknown API key")
            page.fill("#key", site.key)
            page.click("#login")
            expect(page).to_have_url(f"{url}/review/{ref}?limit=3")
            expect(page.locator(".who")).to_contain_text("rita")

            # The type queue: type suspicions and type conflicts only, most suspicious first.
            def card(name: str) -> object:
                return page.locator(f"#item-{ids[name]}")

            progress, status = page.locator("#progress"), page.locator("#status")
            assert _card_ids(page) == [ids[n] for n in ("stock", "typeclash", "placeholder")]
            expect(progress).to_have_text("0 / 5 reviewed")
            expect(page.locator("#range")).to_have_text("items 1–3 of 5")
            stock = page.locator(f"#item-{ids['stock']}")
            expect(stock).to_have_class(re.compile(r"\bdisagree\b.*\bfocused\b"))
            expect(stock.locator(".model")).to_have_text("Stock 93%")
            assert stock.locator("img").evaluate("img => img.complete && img.naturalWidth") > 0
            clash = page.locator(f"#item-{ids['typeclash']}")
            expect(clash.locator(".conflict")).to_have_text(
                "dealer-5 said Dealer · dealer-9 said Stock"
            )
            # Every key has its button.
            assert {"k", "j", "a", "x", "u", "1", "2", "3", "p", "n"} <= _button_keys(page)

            # Keyboard: accepting "stock" takes it out of the to-review queue.
            page.keyboard.press("a")
            expect(status).to_have_text(f"item {ids['stock']} accepted")
            expect(stock).to_be_hidden()
            expect(progress).to_have_text("1 / 5 reviewed")
            expect(clash).to_be_focused()

            # Mouse: the "Stock" button relabels the focused conflict.
            site.clock.advance(60)
            page.get_by_role("button", name="Stock", exact=True).click()
            expect(clash).to_be_hidden()
            expect(progress).to_have_text("2 / 5 reviewed")
            placeholder = page.locator(f"#item-{ids['placeholder']}")
            expect(placeholder).to_be_focused()

            # The next-page key continues after the last card: "calm" is not skipped.
            page.keyboard.press("n")
            expect(page).to_have_url(re.compile(rf"after={ids['placeholder']}$"))
            assert _card_ids(page) == [ids["calm"], ids["unranked"]]
            expect(page.locator("#range")).to_have_text("items 2–3 of 3")
            calm, unranked = (page.locator(f"#item-{ids[n]}") for n in ("calm", "unranked"))

            site.clock.advance(60)
            page.keyboard.press("x")  # exclude "calm"
            expect(calm).to_be_hidden()
            expect(progress).to_have_text("3 / 5 reviewed")
            site.clock.advance(60)
            page.keyboard.press("u")  # undo: "calm" comes back, focused
            expect(calm).to_be_visible()
            expect(calm.locator(".state")).to_have_text("included")
            expect(status).to_have_text(f"undid exclude on item {ids['calm']}")
            expect(progress).to_have_text("2 / 5 reviewed")
            expect(calm).to_be_focused()
            page.keyboard.press("j")
            expect(unranked).to_be_focused()
            page.keyboard.press("ArrowLeft")
            expect(calm).to_be_focused()

            # Touch: tap a card, then tap "Accept".
            page.keyboard.press("j")
            site.clock.advance(60)
            calm.tap()
            expect(calm).to_be_focused()
            page.locator("#btn-accept").tap()
            expect(calm).to_be_hidden()
            expect(progress).to_have_text("3 / 5 reviewed")

            # Opened again, the queue resumes after the last decision ("calm"); the
            # skipped "placeholder" is still on the first page.
            page.goto(f"{url}/review/{ref}?limit=3")
            expect(page.locator("#note")).to_have_text("resumed after your last decision.")
            assert _card_ids(page) == [ids["unranked"]]
            expect(unranked).to_be_focused()
            site.clock.advance(60)
            page.keyboard.press("3")  # "unranked" becomes a Placeholder: no color
            expect(progress).to_have_text("4 / 5 reviewed")
            page.keyboard.press("p")
            expect(page).to_have_url(re.compile(r"page=1$"))
            assert _card_ids(page) == [ids["placeholder"]]

            # The undecided filter against all items; ?page=999 shows the last page.
            page.click("#show-all")
            assert _card_ids(page) == [ids[n] for n in ("stock", "typeclash", "placeholder")]
            expect(page.locator(".card.decided")).to_have_count(2)
            page.goto(f"{url}/review/{ref}?show=all&limit=3&page=999")
            expect(page.locator("#note")).to_have_text("page 999 is past the end: showing page 2.")
            assert _card_ids(page) == [ids["calm"], ids["unranked"]]
            page.click("#show-undecided")
            assert _card_ids(page) == [ids["placeholder"]]

            # The color queue: color suspicions and color conflicts only, and who said what;
            # not "unranked", now a Placeholder, which has no color.
            page.goto(f"{url}/review/{ref}?mode=color")
            assert _card_ids(page) == [ids[n] for n in ("grey", "flagged", "white")]
            expect(page.locator("#progress")).to_have_text("0 / 3 reviewed")
            flagged = page.locator(f"#item-{ids['flagged']}")
            expect(flagged.locator(".conflict")).to_have_text(
                "dealer-42 said Black · dealer-77 said Grey"
            )
            colors = {f"c{k}" for k in "kbnugeoipwry"}
            assert colors <= _button_keys(page)
            page.keyboard.press("j")
            expect(flagged).to_be_focused()
            site.clock.advance(60)
            page.keyboard.press("c")
            page.keyboard.press("e")
            expect(flagged).to_be_hidden()
            expect(page.locator("#progress")).to_have_text("1 / 3 reviewed")
            # Another reviewer makes "white" a Placeholder meanwhile: this page's color for
            # it is refused, the refusal is shown and the card stays.
            white = page.locator(f"#item-{ids['white']}")
            white.click()
            expect(white).to_be_focused()
            with site.db.write() as session:
                review_repo.record_decision(
                    session,
                    ref,
                    ids["white"],
                    action="relabel",
                    field="image_type",
                    label="Placeholder",
                    user="otto",
                    now=START + 7 * dt.timedelta(minutes=1),
                )
            page.get_by_role("button", name="Red", exact=True).click()
            expect(status).to_contain_text("Placeholder, which has no color")
            expect(status).to_have_class("error")
            expect(white).to_be_visible()
            assert errors == []
        finally:
            browser.close()

    with site.db.read() as session:
        stored = review_repo.decisions(session, ref)
        rows = session.scalars(select(DatasetItemRow).where(DatasetItemRow.version_ref == ref))
        items = {item.id: item for item in rows}
    minute = dt.timedelta(minutes=1)
    assert [
        (d.item_id, d.action, d.field, d.from_label, d.to_label, d.user, d.created_at)
        for d in stored
    ] == [
        (ids["stock"], "accept", "image_type", "Dealer", "Dealer", "rita", START),
        (ids["typeclash"], "relabel", "image_type", "Dealer", "Stock", "rita", START + minute),
        (ids["calm"], "exclude", "image_type", "Dealer", "Dealer", "rita", START + 2 * minute),
        (ids["calm"], "accept", "image_type", "Dealer", "Dealer", "rita", START + 4 * minute),
        (
            ids["unranked"],
            "relabel",
            "image_type",
            "Stock",
            "Placeholder",
            "rita",
            START + 5 * minute,
        ),
        (ids["flagged"], "relabel", "color", "Black", "Grey", "rita", START + 6 * minute),
        (
            ids["white"],
            "relabel",
            "image_type",
            "Dealer",
            "Placeholder",
            "otto",
            START + 7 * minute,
        ),
    ]
    assert (stored[2].undone_by, stored[2].undone_at) == ("rita", START + 3 * minute)
    state = {
        name: (items[ids[name]].status, items[ids[name]].image_type, items[ids[name]].color)
        for name in ("stock", "typeclash", "calm", "unranked", "flagged", "placeholder")
    }
    assert state == {
        "stock": ("included", "Dealer", "Red"),
        "typeclash": ("included", "Stock", "Red"),
        "calm": ("included", "Dealer", "Red"),
        "unranked": ("included", "Placeholder", None),
        "flagged": ("included", "Dealer", "Grey"),
        "placeholder": ("included", "Dealer", "Blue"),
    }
