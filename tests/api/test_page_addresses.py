"""Every advertiser's fix page and every draft's review grid has an address that works.

Advertiser ids come from the scrapers: ``login`` is as good an id as ``dealer-42``, but
``/fix/login`` is the login form. Such an advertiser's page is ``/fix/~/login``, which the
index links to; ``~`` is in no advertiser id, so no id shadows that address.
"""

from __future__ import annotations

import re

import pytest
from fastapi.testclient import TestClient
from starlette.routing import Route

from cartag.api.routes import fix_pages, review_pages
from cartag.errors import InputError
from cartag.store import advertisers as advertiser_repo
from cartag.store import apikeys
from cartag.store import datasets as dataset_repo
from cartag.store.db import Database
from cartag.vocab import check_advertiser_id
from tests.api.conftest import AppFactory
from tests.support.browser import log_in
from tests.support.factories import NOW, add_image

pytestmark = pytest.mark.slow

IDS = ("login", "logout", "group/images", "images", "dealer-42")


@pytest.fixture
def pages(make_client: AppFactory, db: Database) -> TestClient:
    """The app with one image for each of :data:`IDS`."""
    for number, advertiser in enumerate(IDS):
        key = add_image(db, phash=f"{number:016x}").image_key
        with db.write() as session:
            advertiser_repo.record_advertiser_images(session, advertiser, {key: None}, NOW)
    return make_client(db, run_jobs=False)


def _log_in(client: TestClient, db: Database, advertisers: tuple[str, ...] = ()) -> None:
    with db.write() as session:
        _, key = apikeys.create_key(
            session, name="dana", roles=["fixer"], now=NOW, advertisers=advertisers
        )
    assert log_in(client, "/fix", key).status_code == 303


def _opens_the_page_of(client: TestClient, path: str, advertiser: str) -> None:
    page = client.get(path, follow_redirects=False)
    assert page.status_code == 200, (path, page.text[:300])
    assert f'data-advertiser="{advertiser}"' in page.text, path
    assert "1 images" in page.text, path


def test_the_index_links_every_advertiser_to_its_own_page(pages: TestClient, db: Database) -> None:
    _log_in(pages, db)
    index = pages.get("/fix")
    assert index.status_code == 200
    links = re.findall(r'<a class="open" href="([^"]+)">', index.text)
    assert links == [
        "/fix/dealer-42",
        "/fix/~/group/images",
        "/fix/images",
        "/fix/~/login",
        "/fix/~/logout",
    ]
    for link, advertiser in zip(links, sorted(IDS), strict=True):
        _opens_the_page_of(pages, link, advertiser)
        _opens_the_page_of(pages, f"{link}?low_confidence=true", advertiser)
    # Every advertiser has the "~" address; the short one stays for the others.
    _opens_the_page_of(pages, "/fix/~/dealer-42", "dealer-42")
    _opens_the_page_of(pages, "/fix/logout", "logout")  # the logout form is a POST only
    assert 'action="/fix/login"' in pages.get("/fix/login").text  # still the login form


def test_a_key_of_advertiser_login_goes_to_its_page(pages: TestClient, db: Database) -> None:
    _log_in(pages, db, advertisers=("login",))
    to_page = pages.get("/fix", follow_redirects=False)
    assert to_page.status_code == 303 and to_page.headers["location"] == "/fix/~/login"
    _opens_the_page_of(pages, "/fix/~/login", "login")


def test_the_page_of_advertiser_login_comes_back_after_the_login_form(pages: TestClient) -> None:
    anonymous = pages.get("/fix/~/login?fixed=true", follow_redirects=False)
    assert anonymous.status_code == 303
    assert anonymous.headers["location"] == "/fix/login?next=%2Ffix%2F~%2Flogin%3Ffixed%3Dtrue"


def _literal_heads(routes: list[object], prefix: str) -> set[str]:
    """The first path segment after ``prefix`` of the routes that name it literally."""
    heads = set()
    for route in routes:
        assert isinstance(route, Route)
        head = route.path.removeprefix(prefix).lstrip("/").split("/")[0]
        if head and "{" not in head:
            heads.add(head)
    return heads


def test_page_names_are_known_and_no_ref_or_id_shadows_the_tilde() -> None:
    heads = _literal_heads(fix_pages.pages.routes, "/fix")
    assert heads == fix_pages.PAGE_NAMES | {"~"}
    with pytest.raises(InputError):
        check_advertiser_id("~")
    # A draft's grid is /review/NAME@N (the index links the whole ref): no page name of
    # /review is a ref, so a dataset named "login" keeps its grid at /review/login@1.
    for head in _literal_heads(review_pages.pages.routes, "/review"):
        with pytest.raises(InputError):
            dataset_repo.parse_ref(head)
    assert dataset_repo.parse_ref("login@1") == ("login", 1)
