"""The monitor page's filter form: a bad value shows the page again, with the reason.

A browser (logged in, asking for HTML) gets the form back as typed, the message beside it;
scripts (a Bearer key, or ``Accept: application/json``) keep the JSON 422 naming the field.
"""

from __future__ import annotations

import datetime as dt
import html
import re

import pytest
from fastapi import Request
from fastapi.testclient import TestClient

from cartag.api import browser as browser_module
from cartag.clock import FakeClock
from cartag.store.db import Database
from tests.api.conftest import AppFactory, make_headers
from tests.support.browser import log_in
from tests.support.monitoring import TODAY, seed_monitoring

pytestmark = pytest.mark.slow

NOW = dt.datetime.combine(TODAY, dt.time(15), dt.UTC)
# What Chromium and Firefox send when they open a page.
BROWSER = {"Accept": "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"}
PAGE_HEADERS = ("content-security-policy", "x-content-type-options", "cache-control")


@pytest.fixture
def monitor(make_client: AppFactory, db: Database) -> TestClient:
    seed_monitoring(db)
    return make_client(db, clock=FakeClock(NOW), run_jobs=False)


@pytest.fixture
def browser(monitor: TestClient, db: Database) -> TestClient:
    """The client, logged in through the form with a reviewer key (a session cookie)."""
    key = make_headers(db, "reviewer")["Authorization"].split()[1]
    assert log_in(monitor, "/monitor", key).status_code == 303
    return monitor


def _input(page: str, name: str) -> str:
    """The value of the form's input ``name``, unescaped as a browser reads it."""
    found = re.search(rf'<input name="{name}" value="([^"]*)"', page)
    assert found is not None, f"no input {name} in the page"
    return html.unescape(found.group(1))


def _error(page: str) -> str:
    found = re.search(r'<p class="alert" role="alert" id="filter-error">([^<]*)</p>', page)
    assert found is not None, "no error beside the form"
    return html.unescape(found.group(1))


@pytest.mark.parametrize(
    ("query", "field", "says"),
    [
        ({"since": "2026-02-30", "advertiser": "steady"}, "since", "not a day of the calendar"),
        ({"since": "2099-01-01", "advertiser": ""}, "since", "after the report's last day"),
        ({"since": "abc", "advertiser": ""}, "since", "7d"),
        ({"since": "\u0663d", "advertiser": ""}, "since", "YYYY-MM-DD"),
        ({"since": "20261120", "advertiser": ""}, "since", "neither a period nor a date"),
        ({"since": "2026-W47-1", "advertiser": ""}, "since", "neither a period nor a date"),
        ({"since": "3000d", "advertiser": ""}, "since", "shorter period"),
        ({"since": "7d" * 40, "advertiser": ""}, "since", "at most 32"),
        ({"since": "7d", "advertiser": "dealer 42"}, "advertiser", "letters, digits"),
        ({"since": "7d", "advertiser": "a/../b"}, "advertiser", "'..'"),
        ({"since": "7d", "advertiser": "  "}, "advertiser", "leave it empty"),
    ],
)
def test_a_bad_filter_shows_the_form_again_with_the_reason(
    browser: TestClient, query: dict[str, str], field: str, says: str
) -> None:
    page = browser.get("/monitor", params=query, headers=BROWSER, follow_redirects=False)
    assert page.status_code == 422
    assert page.headers["content-type"].startswith("text/html")
    assert all(name in page.headers for name in PAGE_HEADERS)
    assert _input(page.text, "since") == query["since"]
    assert _input(page.text, "advertiser") == query["advertiser"]
    assert _error(page.text).startswith(f"{field} ") and says in _error(page.text)
    # The field at fault is marked for screen readers and focused.
    assert re.search(rf'<input name="{field}" value="[^"]*"[^>]* aria-invalid="true"', page.text)
    assert "<svg" not in page.text  # no figures for a filter that says nothing
    assert 'action="/monitor/logout"' in page.text


def test_what_a_user_types_is_escaped(browser: TestClient) -> None:
    query = {"since": '"><script>x()</script>', "advertiser": "<b>"}
    page = browser.get("/monitor", params=query, headers=BROWSER)
    assert page.status_code == 422
    assert "<script>" not in page.text and "<b>" not in page.text
    assert _input(page.text, "since") == query["since"]


def test_scripts_keep_the_json_422_naming_the_field(browser: TestClient, db: Database) -> None:
    # The same browser session asking for JSON, and a Bearer key even when it asks for HTML.
    as_json = browser.get("/monitor?since=2026-02-30", headers={"Accept": "application/json"})
    curl = browser.get("/monitor?since=2026-02-30")  # Accept: */*
    key = {**make_headers(db, "reviewer"), **BROWSER}
    browser.cookies.clear()
    bearer = browser.get("/monitor?since=7d&advertiser=a%20b", headers=key)
    for response, field in ((as_json, "since"), (curl, "since"), (bearer, "advertiser")):
        assert response.status_code == 422, response.text
        assert response.headers["content-type"] == "application/json"
        error = response.json()["error"]
        assert error["code"] == "invalid_input" and error["field"] == field
        assert field in error["message"]


def test_a_blank_advertiser_in_the_form_means_every_advertiser(browser: TestClient) -> None:
    # The form always sends both fields: an empty advertiser box is "advertiser=".
    page = browser.get("/monitor?since=7d&advertiser=", headers=BROWSER)
    assert page.status_code == 200, page.text
    assert ">jumpy<" in page.text and ">steady<" in page.text
    assert _input(page.text, "advertiser") == ""


def test_a_good_filter_keeps_its_values_in_the_form(browser: TestClient) -> None:
    page = browser.get("/monitor?since=2w&advertiser=steady", headers=BROWSER)
    assert page.status_code == 200
    assert _input(page.text, "since") == "2w" and _input(page.text, "advertiser") == "steady"
    assert 'id="filter-error"' not in page.text


def test_a_bad_filter_before_logging_in_goes_to_the_login_form(monitor: TestClient) -> None:
    # Nothing of the page, not even its form, before the login; the filter comes back after.
    anonymous = monitor.get(
        "/monitor?since=abc&advertiser=a%20b", headers=BROWSER, follow_redirects=False
    )
    assert anonymous.status_code == 303
    assert anonymous.headers["location"] == (
        "/monitor/login?next=%2Fmonitor%3Fsince%3Dabc%26advertiser%3Da%2520b"
    )


@pytest.mark.parametrize(
    ("accept", "html"),
    [
        (BROWSER["Accept"], True),
        ("text/html", True),
        ("text/*;q=0.9, application/json;q=0.5", True),
        ("*/*", False),
        ("", False),
        ("application/json", False),
        ("application/json, text/html;q=0.9", False),
        ("text/html;q=0, */*", False),
        ("text/html;q=abc, application/json;q=0.1", False),
        ("text/html, application/*", False),
    ],
)
def test_a_browser_is_a_request_preferring_html(accept: str, html: bool) -> None:
    headers = [(b"accept", accept.encode())] if accept else []
    request = Request({"type": "http", "method": "GET", "path": "/", "headers": headers})
    assert browser_module.prefers_html(request) is html
