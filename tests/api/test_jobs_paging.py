"""GET /v1/jobs pages as GET /v1/advertisers does (``?page=``, ``pages``); ``offset`` too."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from fastapi.testclient import TestClient

from cartag.models.classifier import Classifier
from cartag.store.db import Database
from tests.api.conftest import AppFactory, make_headers
from tests.support.factories import NOW, finished_job
from tests.support.fakes import FixedClassifier


@pytest.fixture
def classifier() -> Classifier:
    """No model: the listing never classifies."""
    return FixedClassifier()


@pytest.fixture
def admin(db: Database) -> dict[str, str]:
    """An admin key: it lists every job."""
    return make_headers(db, "admin")


def _seed(db: Database, n: int) -> list[str]:
    """``n`` finished jobs; their ids newest first, as the listing orders them."""
    ids = [finished_job(db, None, now=NOW + dt.timedelta(minutes=i)) for i in range(n)]
    return ids[::-1]


def _list(client: TestClient, headers: dict[str, str], query: str) -> dict[str, Any]:
    response = client.get(f"/v1/jobs?{query}", headers=headers)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def _ids(body: dict[str, Any]) -> list[str]:
    return [job["id"] for job in body["jobs"]]


def test_a_page_holds_the_jobs_of_its_offset(
    make_client: AppFactory, db: Database, admin: dict[str, str]
) -> None:
    ids = _seed(db, 5)
    client = make_client(db)
    for page, offset in ((1, 0), (2, 2), (3, 4)):
        by_page = _list(client, admin, f"limit=2&page={page}")
        by_offset = _list(client, admin, f"limit=2&offset={offset}")
        assert _ids(by_page) == _ids(by_offset) == ids[offset : offset + 2]
        for body in (by_page, by_offset):
            fields = ("total", "page", "pages", "limit", "offset")
            assert tuple(body[f] for f in fields) == (5, page, 3, 2, offset)
    # Neither: the first page, as before.
    first = _list(client, admin, "limit=2")
    assert (_ids(first), first["page"], first["pages"], first["offset"]) == (ids[:2], 1, 3, 0)
    # An offset between pages: the page its first job is on.
    between = _list(client, admin, "limit=2&offset=3")
    assert (_ids(between), between["page"]) == (ids[3:5], 2)


def test_a_page_past_the_end_is_empty_and_counts_every_job(
    make_client: AppFactory, db: Database, admin: dict[str, str]
) -> None:
    _seed(db, 3)
    client = make_client(db)
    past = _list(client, admin, "limit=2&page=5")
    assert past["jobs"] == []
    assert (past["total"], past["page"], past["pages"], past["offset"]) == (3, 5, 2, 8)
    # No jobs at all: one (empty) page, as GET /v1/advertisers counts them.
    empty = _list(client, admin, "status=queued&page=1")
    assert (empty["jobs"], empty["total"], empty["pages"]) == ([], 0, 1)


# Before, ``page`` was an unknown parameter: a 422 too, but one that said so.
_BAD_PAGES = [
    ("page=2&offset=2", "not both"),
    ("page=1&offset=0", "not both"),  # even naming the same jobs
    ("page=0", "greater than or equal to 1"),
    ("page=1000001", "less than or equal to 1000000"),
    ("page=x", "valid integer"),
]


@pytest.mark.parametrize(("query", "says"), _BAD_PAGES)
def test_bad_pages_are_422_naming_the_page(
    make_client: AppFactory, db: Database, admin: dict[str, str], query: str, says: str
) -> None:
    client = make_client(db)
    response = client.get(f"/v1/jobs?{query}", headers=admin)
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert (error["code"], error["field"]) == ("invalid_input", "page")
    assert [p["field"] for p in error["problems"]] == ["page"]
    assert says in error["message"] and "unknown" not in error["message"]
