"""GET /v1/conflicts pages as GET /v1/advertisers does (``?page=``, ``pages``); ``offset`` too."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from fastapi.testclient import TestClient

from cartag.clock import FakeClock
from cartag.models.classifier import Classifier
from cartag.pipeline import fixes as fix_service
from cartag.pipeline.fixes import Author
from cartag.store.db import Database
from tests.api.conftest import AppFactory, make_headers
from tests.support.factories import NOW, add_image
from tests.support.fakes import FixedClassifier


@pytest.fixture
def classifier() -> Classifier:
    """No model: the listing never classifies."""
    return FixedClassifier()


@pytest.fixture
def admin(db: Database) -> dict[str, str]:
    return make_headers(db, "admin")


def _seed(db: Database, n: int) -> list[str]:
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


def _list(client: TestClient, headers: dict[str, str], query: str) -> dict[str, Any]:
    response = client.get(f"/v1/conflicts?{query}", headers=headers)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def _keys(body: dict[str, Any]) -> list[str]:
    return [item["image_key"] for item in body["items"]]


def test_a_page_holds_the_conflicts_of_its_offset(
    make_client: AppFactory, db: Database, admin: dict[str, str]
) -> None:
    keys = _seed(db, 5)
    client = make_client(db)
    for page, offset in ((1, 0), (2, 2), (3, 4)):
        by_page = _list(client, admin, f"limit=2&page={page}")
        by_offset = _list(client, admin, f"limit=2&offset={offset}")
        assert by_page == by_offset  # the same answer, field for field
        assert _keys(by_page) == keys[offset : offset + 2]
        fields = ("total", "page", "pages", "limit", "offset")
        assert tuple(by_page[f] for f in fields) == (5, page, 3, 2, offset)
    # Neither: the first page, as before.
    first = _list(client, admin, "limit=2")
    assert (_keys(first), first["page"], first["pages"], first["offset"]) == (keys[:2], 1, 3, 0)
    # An offset between pages: the page its first conflict is on.
    between = _list(client, admin, "limit=2&offset=3")
    assert (_keys(between), between["page"]) == (keys[3:5], 2)


def test_a_page_past_the_end_is_empty_and_counts_every_conflict(
    make_client: AppFactory, db: Database, admin: dict[str, str]
) -> None:
    client = make_client(db)
    # No conflicts at all: one (empty) page, as GET /v1/advertisers counts them.
    empty = _list(client, admin, "page=1")
    assert (empty["items"], empty["total"], empty["page"], empty["pages"]) == ([], 0, 1, 1)
    _seed(db, 3)
    past = _list(client, admin, "limit=2&page=5")
    assert past["items"] == []
    assert (past["total"], past["page"], past["pages"], past["offset"]) == (3, 5, 2, 8)


# Before, ``page`` was an unknown parameter: a 422 too, but one that said so.
_BAD_PAGES = [
    ("page=2&offset=2", "not both"),
    ("page=1&offset=0", "not both"),  # even naming the same conflicts
    ("page=0", "greater than or equal to 1"),
    ("page=1000001", "less than or equal to 1000000"),
    ("page=x", "valid integer"),
]


@pytest.mark.parametrize(("query", "says"), _BAD_PAGES)
def test_bad_pages_are_422_naming_the_page(
    make_client: AppFactory, db: Database, admin: dict[str, str], query: str, says: str
) -> None:
    client = make_client(db)
    response = client.get(f"/v1/conflicts?{query}", headers=admin)
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert (error["code"], error["field"]) == ("invalid_input", "page")
    assert [p["field"] for p in error["problems"]] == ["page"]
    assert says in error["message"] and "unknown" not in error["message"]
