"""The fix pages' index (``/fix``): the advertisers a key may see, a page at a time, searched
by id. At 20,000 advertisers it was one 4.8 MB page with every advertiser's counts."""

from __future__ import annotations

import re

import pytest
from fastapi.testclient import TestClient

from cartag.store import advertisers as advertiser_repo
from cartag.store import apikeys
from cartag.store.db import Database
from tests.api.conftest import AppFactory
from tests.support.browser import log_in
from tests.support.factories import NOW, add_image

pytestmark = pytest.mark.slow

BROWSER = {"Accept": "text/html,application/xhtml+xml,*/*;q=0.8"}
# 250 advertisers; ids sort by code point (upper case before lower), as the API lists them.
IDS = sorted(
    [f"dealer-{n:03d}" for n in range(240)]
    + ["Dealer-Big", "group/dealer-7", "login", "shop.dealer", "x_dealer"]
    + [f"other-{n}" for n in range(5)]
)


@pytest.fixture
def pages(make_client: AppFactory, db: Database) -> TestClient:
    key = add_image(db).image_key
    with db.write() as session:
        for advertiser in IDS:
            advertiser_repo.record_advertiser_images(session, advertiser, {key: None}, NOW)
        advertiser_repo.set_advertiser(
            session, "settings-only", reclassify_on_promote=True, now=NOW
        )
    return make_client(db, run_jobs=False)


def _log_in(client: TestClient, db: Database, *advertisers: str, role: str = "fixer") -> None:
    with db.write() as session:
        _, key = apikeys.create_key(
            session, name="dana", roles=[role], now=NOW, advertisers=advertisers
        )
    # A reviewer logs in where its role lets it: its session then reaches /fix too.
    assert log_in(client, "/fix" if role == "fixer" else "/review", key).status_code == 303


def _listed(html: str) -> list[str]:
    return re.findall(r"<tr>\s*<td><code>([^<]*)</code>", html)


def test_the_index_pages_through_every_advertiser_in_id_order(
    pages: TestClient, db: Database
) -> None:
    _log_in(pages, db)
    everyone = sorted([*IDS, "settings-only"])
    first = pages.get("/fix")
    assert first.status_code == 200
    assert _listed(first.text) == everyone[:100]
    assert "251 advertisers, 1–100 here." in first.text
    assert "page 1 of 3" in first.text and 'id="prev-page"' not in first.text
    assert 'id="next-page" href="/fix?page=2"' in first.text
    seen = []
    for page in (1, 2, 3):
        seen += _listed(pages.get(f"/fix?page={page}").text)
    assert seen == everyone  # each once, in one stable order
    last = pages.get("/fix?page=3")
    assert 'id="prev-page" href="/fix?page=2"' in last.text and 'id="next-page"' not in last.text
    assert _listed(pages.get("/fix?page=999").text) == everyone[200:]  # past the end: the last
    small = pages.get("/fix?limit=40&page=2")
    assert _listed(small.text) == everyone[40:80]
    assert 'href="/fix?limit=40&amp;page=3"' in small.text  # the page size is kept
    # The advertiser named "login" still links to its own page, not the login form.
    assert 'href="/fix/~/login"' in pages.get("/fix?q=login").text


def test_the_search_finds_ids_holding_the_text_ignoring_case(
    pages: TestClient, db: Database
) -> None:
    _log_in(pages, db)
    big = pages.get("/fix?q=BIG")
    assert _listed(big.text) == ["Dealer-Big"]
    assert "1 of 251 advertisers have an id holding “BIG”" in big.text
    assert 'value="BIG"' in big.text and 'href="/fix">all advertisers</a>' in big.text
    prefix = pages.get("/fix?q=dealer-1")
    assert _listed(prefix.text) == [f"dealer-{n}" for n in range(100, 200)]
    assert "page 1 of 1" not in prefix.text  # one page: no pager
    middle = pages.get("/fix?q=dealer-0&page=2")  # one page of matches: that page
    assert _listed(middle.text) == [f"dealer-{n:03d}" for n in range(100)]
    slash = pages.get("/fix?q=%2Fdealer")
    assert _listed(slash.text) == ["group/dealer-7"]
    spaced = pages.get("/fix?q=%20shop.%20")  # as pasted, with spaces around
    assert _listed(spaced.text) == ["shop.dealer"]
    many = pages.get("/fix?q=dealer&limit=100&page=3")
    assert 'href="/fix?q=dealer&amp;page=2"' in many.text
    assert _listed(many.text) == [i for i in IDS if "dealer" in i.casefold()][200:]


def test_a_search_is_escaped_and_one_that_finds_nothing_says_so(
    pages: TestClient, db: Database
) -> None:
    _log_in(pages, db)
    page = pages.get("/fix", params={"q": '<script>alert(1)</script>"'})
    assert page.status_code == 200
    assert "<script>alert" not in page.text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;&#34;" in page.text
    assert 'id="no-match"' in page.text and _listed(page.text) == []


def test_a_scoped_key_searches_only_its_own_advertisers(pages: TestClient, db: Database) -> None:
    _log_in(pages, db, "dealer-001", "dealer-002", "other-1")
    assert _listed(pages.get("/fix").text) == ["dealer-001", "dealer-002", "other-1"]
    assert _listed(pages.get("/fix?q=dealer").text) == ["dealer-001", "dealer-002"]
    assert _listed(pages.get("/fix?q=dealer-1").text) == []  # another's: not found
    refused = pages.get("/fix/dealer-100")
    assert refused.status_code == 403
    assert _listed(refused.text) == ["dealer-001", "dealer-002", "other-1"]


def test_the_index_keeps_its_login_role_and_address_checks(pages: TestClient, db: Database) -> None:
    anonymous = pages.get("/fix?q=dealer&page=2", follow_redirects=False)
    assert anonymous.status_code == 303
    assert anonymous.headers["location"] == "/fix/login?next=%2Ffix%3Fq%3Ddealer%26page%3D2"
    _log_in(pages, db, role="reviewer")
    refused = pages.get("/fix?q=dealer")
    assert refused.status_code == 403 and "lacks the fixer role" in refused.text
    for bad, field in (("page=0", "page"), ("limit=501", "limit"), ("q=" + "x" * 129, "q")):
        page = pages.get(f"/fix?{bad}", headers=BROWSER)
        assert page.status_code == 422, bad
        assert page.headers["content-type"].startswith("text/html")
        assert f"<code>{field}</code>" in page.text
