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


@pytest.mark.parametrize(
    ("path", "field"),
    [
        ("/fix/dealer-1/", "advertiser_id"),  # a trailing slash: no advertiser id
        ("/fix/~/%3Cx%3E", "advertiser_id"),
        ("/fix/x%00y", "path"),  # a NUL: refused before any route
        ("/fix/dealer-1?fixed_by=%00", "fixed_by"),
    ],
)
def test_a_bad_value_in_the_address_links_to_a_page_that_exists(
    client: TestClient, path: str, field: str
) -> None:
    page = client.get(path, headers=BROWSER, follow_redirects=False)
    assert page.status_code == 422, page.text
    assert page.headers["content-type"].startswith("text/html")
    assert field in page.text
    if "?" in path:  # the same page without its query
        assert f'href="{path.split("?")[0]}"' in page.text
    else:  # the path itself is wrong: the area's start, not the same address again
        assert 'href="/fix"' in page.text and f'href="{path}"' not in page.text
    answer = client.get(path, follow_redirects=False)
    assert answer.status_code == 422 and answer.json()["error"]["field"] == field


@pytest.mark.parametrize("path", ["/review/cars@1/foo", "/monitor/nothing", "/review/a/b/c"])
def test_an_address_no_page_serves_is_a_page_with_the_way_back(
    client: TestClient, path: str
) -> None:
    page = client.get(path, headers=BROWSER, follow_redirects=False)
    assert page.status_code == 404
    assert page.headers["content-type"].startswith("text/html")
    area = path.split("/")[1]
    assert f'href="/{area}"' in page.text and "no-store" in page.headers["cache-control"]
    assert client.get(path).json()["error"]["code"] == "not_found"  # scripts: JSON
    # The JSON API stays JSON, whatever the client accepts.
    assert client.get("/v1/nothing", headers=BROWSER).json()["error"]["code"] == "not_found"
