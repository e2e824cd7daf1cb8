"""GET /v1/jobs and /v1/conflicts page as GET /v1/advertisers does (``?page=``, ``pages``),
and by ``offset`` as they did first."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
from fastapi.testclient import TestClient

from cartag.clock import FakeClock
from cartag.models.classifier import Classifier
from cartag.pipeline import fixes as fix_service
from cartag.pipeline.fixes import Author
from cartag.store.db import Database
from tests.api.conftest import AppFactory, make_headers
from tests.support.factories import NOW, add_image, finished_job
from tests.support.fakes import FixedClassifier


def _jobs(db: Database, n: int) -> list[str]:
    """``n`` finished jobs; their ids newest first, as the listing orders them."""
    ids = [finished_job(db, None, now=NOW + dt.timedelta(minutes=i)) for i in range(n)]
    return ids[::-1]


def _conflicts(db: Database, n: int) -> list[str]:
    """``n`` images two advertisers disagree on; their keys most recently fixed first."""
    keys = []
    for i in range(n):
        key = add_image(db).image_key
        for minute, (advertiser, color) in enumerate((("a", "Blue"), ("b", "Grey"))):
            with db.write() as session:
                fix_service.apply_fix(
                    session,
                    image_key=key,
                    advertiser_id=advertiser,
                    author=Author("alice"),
                    scope="advertiser",
                    image_type=None,
                    color=color,
                    comment=None,
                    clock=FakeClock(NOW + dt.timedelta(minutes=2 * i + minute)),
                )
        keys.append(key)
    return keys[::-1]


@dataclass(frozen=True)
class Listing:
    """A listing under test: its path, where its answer lists items, and how to make them."""

    path: str
    items: str
    key: str
    seed: Callable[[Database, int], list[str]]

    def get(self, client: TestClient, headers: dict[str, str], query: str) -> dict[str, Any]:
        response = client.get(f"{self.path}?{query}", headers=headers)
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        return body

    def keys(self, body: dict[str, Any]) -> list[str]:
        return [item[self.key] for item in body[self.items]]


LISTINGS = [
    pytest.param(Listing("/v1/jobs", "jobs", "id", _jobs), id="jobs"),
    pytest.param(Listing("/v1/conflicts", "items", "image_key", _conflicts), id="conflicts"),
]


@pytest.fixture
def classifier() -> Classifier:
    """No model: the listings never classify."""
    return FixedClassifier()


@pytest.fixture
def admin(db: Database) -> dict[str, str]:
    """An admin key: it lists every job, and may see conflicts between advertisers."""
    return make_headers(db, "admin")


@pytest.mark.parametrize("listing", LISTINGS)
def test_a_page_holds_the_items_of_its_offset(
    make_client: AppFactory, db: Database, admin: dict[str, str], listing: Listing
) -> None:
    keys = listing.seed(db, 5)
    client = make_client(db)
    for page, offset in ((1, 0), (2, 2), (3, 4)):
        by_page = listing.get(client, admin, f"limit=2&page={page}")
        by_offset = listing.get(client, admin, f"limit=2&offset={offset}")
        assert by_page == by_offset  # the same answer, field for field
        assert listing.keys(by_page) == keys[offset : offset + 2]
        fields = ("total", "page", "pages", "limit", "offset")
        assert tuple(by_page[f] for f in fields) == (5, page, 3, 2, offset)
    # Neither: the first page, as before.
    first = listing.get(client, admin, "limit=2")
    assert (listing.keys(first), first["page"], first["pages"], first["offset"]) == (
        keys[:2],
        1,
        3,
        0,
    )
    # An offset between pages: the page its first item is on.
    between = listing.get(client, admin, "limit=2&offset=3")
    assert (listing.keys(between), between["page"]) == (keys[3:5], 2)


@pytest.mark.parametrize("listing", LISTINGS)
def test_a_page_past_the_end_is_empty_and_counts_every_item(
    make_client: AppFactory, db: Database, admin: dict[str, str], listing: Listing
) -> None:
    client = make_client(db)
    # Nothing at all: one (empty) page, as GET /v1/advertisers counts them.
    empty = listing.get(client, admin, "page=1")
    assert (empty[listing.items], empty["total"], empty["page"], empty["pages"]) == ([], 0, 1, 1)
    listing.seed(db, 3)
    past = listing.get(client, admin, "limit=2&page=5")
    assert past[listing.items] == []
    assert (past["total"], past["page"], past["pages"], past["offset"]) == (3, 5, 2, 8)


# Before, ``page`` was an unknown parameter: a 422 too, but one that said so.
_BAD_PAGES = [
    ("page=2&offset=2", "not both"),
    ("page=1&offset=0", "not both"),  # even naming the same items
    ("page=0", "greater than or equal to 1"),
    ("page=1000001", "less than or equal to 1000000"),
    ("page=x", "valid integer"),
]


@pytest.mark.parametrize("path", ["/v1/jobs", "/v1/conflicts"])
@pytest.mark.parametrize(("query", "says"), _BAD_PAGES)
def test_bad_pages_are_422_naming_the_page(
    make_client: AppFactory,
    db: Database,
    admin: dict[str, str],
    path: str,
    query: str,
    says: str,
) -> None:
    client = make_client(db)
    response = client.get(f"{path}?{query}", headers=admin)
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert (error["code"], error["field"]) == ("invalid_input", "page")
    assert [p["field"] for p in error["problems"]] == ["page"]
    assert says in error["message"] and "unknown" not in error["message"]
