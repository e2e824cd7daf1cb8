"""A browser that opens a page with a bad address gets a page saying what to change.

FastAPI validates the fix and review pages' path and query before the route runs, so a
mistyped bookmark reached the browser as a raw JSON 422, before any login.
"""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from cartag.store.db import Database
from tests.api.conftest import AppFactory

BROWSER = {"Accept": "text/html,application/xhtml+xml,*/*;q=0.8"}


@pytest.fixture
def client(make_client: AppFactory, db: Database) -> TestClient:
    return make_client(db, run_jobs=False)


@pytest.mark.parametrize(
    ("path", "field"),
    [
        ("/fix/dealer-42?page=0", "page"),
        ("/fix/dealer-42?color=Mauve", "color"),
        ("/review/cars@1?mode=zzz", "mode"),
    ],
)
def test_a_bad_page_address_is_a_page_naming_the_parameter(
    client: TestClient, path: str, field: str
) -> None:
    page = client.get(path, headers=BROWSER, follow_redirects=False)
    assert page.status_code == 422
    assert page.headers["content-type"].startswith("text/html")
    assert f"<code>{field}</code>" in page.text
    assert f'href="{path.split("?")[0]}"' in page.text
    assert "no-store" in page.headers.get("cache-control", "")
    # A script (no HTML in Accept) keeps the JSON error.
    answer = client.get(path, follow_redirects=False)
    assert answer.status_code == 422
    assert answer.json()["error"]["field"] == field
