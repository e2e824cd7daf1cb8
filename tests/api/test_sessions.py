"""Browser logins of /review and /monitor: server-side sessions, CSRF on the forms, headers."""

from __future__ import annotations

import html

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from cartag.api import browser as browser_module
from cartag.clock import FakeClock
from cartag.store import apikeys
from cartag.store.db import Database
from cartag.store.tables import BrowserSessionRow
from tests.api.conftest import AppFactory
from tests.support.browser import form_csrf, log_in
from tests.support.factories import NOW

pytestmark = pytest.mark.slow

PAGES = ("/review", "/monitor")


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(NOW)


@pytest.fixture
def browser(make_client: AppFactory, db: Database, clock: FakeClock) -> TestClient:
    return make_client(db, clock=clock, run_jobs=False)


def _key(db: Database, *roles: str) -> str:
    with db.write() as session:
        _, key = apikeys.create_key(session, name="rita", roles=list(roles), now=NOW)
    return key


def _logged_in(client: TestClient, page: str, key: str) -> str:
    """Log in through ``page``'s form; returns the session cookie's value."""
    response = log_in(client, page, key)
    assert response.status_code == 303, response.text
    token = client.cookies.get("cartag_session")
    assert token
    return token


@pytest.mark.parametrize("page", PAGES)
def test_the_cookie_holds_a_session_stored_hashed_never_the_key(
    browser: TestClient, db: Database, page: str
) -> None:
    key = _key(db, "reviewer")
    token = _logged_in(browser, page, key)
    assert key not in token and token != key
    with db.read() as session:
        (row,) = session.scalars(select(BrowserSessionRow))
        assert token not in row.token_hash and len(row.token_hash) == 64
        assert (row.expires_at - row.created_at).total_seconds() == 8 * 3600
    assert browser.get(page, follow_redirects=False).status_code == 200


@pytest.mark.parametrize("page", PAGES)
def test_logout_revokes_the_session_on_the_server(
    browser: TestClient, db: Database, page: str
) -> None:
    token = _logged_in(browser, page, _key(db, "reviewer"))
    shown = browser.get(page)
    assert browser.get("/v1/datasets/none@1/review/items").status_code == 404  # logged in

    out = browser.post(f"{page}/logout", data={"csrf": form_csrf(shown.text)})
    assert out.status_code == 200 and "/login" in str(out.url)
    # A copy of the cookie (stolen, or kept by the browser) is worth nothing now.
    browser.cookies.set("cartag_session", token)
    assert browser.get("/v1/datasets/none@1/review/items").status_code == 401
    assert browser.get(page, follow_redirects=False).status_code == 303


def test_sessions_expire_after_the_ttl(browser: TestClient, db: Database, clock: FakeClock) -> None:
    _logged_in(browser, "/review", _key(db, "reviewer"))
    clock.advance(8 * 3600 - 1)
    assert browser.get("/review", follow_redirects=False).status_code == 200
    clock.advance(2)
    assert browser.get("/review", follow_redirects=False).status_code == 303
    refused = browser.get("/v1/datasets/none@1/review/items")
    assert refused.status_code == 401 and "log in again" in refused.json()["error"]["message"]


def test_revoking_the_key_ends_its_sessions(browser: TestClient, db: Database) -> None:
    key = _key(db, "reviewer")
    _logged_in(browser, "/monitor", key)
    with db.write() as session:
        apikeys.revoke_key(session, key.split("_")[1], NOW)
    assert browser.get("/monitor", follow_redirects=False).status_code == 303
    with db.read() as session:
        (row,) = session.scalars(select(BrowserSessionRow))
        assert row.revoked_at is not None


@pytest.mark.parametrize("page", PAGES)
def test_login_and_logout_forms_need_their_csrf_token(
    browser: TestClient, db: Database, page: str
) -> None:
    key = _key(db, "reviewer")
    # Another site's form: no token, or one that is not the browser's login cookie.
    for data in ({"key": key}, {"key": key, "csrf": "x" * 43}):
        forged = browser.post(f"{page}/login", data=data, follow_redirects=False)
        assert forged.status_code == 403 and "another site" in forged.text
        assert "cartag_session" not in browser.cookies
    _logged_in(browser, page, key)
    for data in ({}, {"csrf": "0" * 64}):
        refused = browser.post(f"{page}/logout", data=data, follow_redirects=False)
        assert refused.status_code == 403
    assert browser.get(page, follow_redirects=False).status_code == 200  # still logged in


@pytest.mark.parametrize("page", ["/fix", "/review", "/monitor"])
def test_logging_out_with_no_live_session_goes_to_the_login_form(
    browser: TestClient, db: Database, page: str
) -> None:
    # Logged out in another tab (or expired), then "Log out" on an old page: a JSON 403.
    stale = _logged_in(browser, page, _key(db, "admin"))
    _logged_in(browser, page, _key(db, "admin"))  # a new login ends the first session
    browser.cookies.set("cartag_session", stale)
    for cookies in (True, False):
        if not cookies:
            browser.cookies.clear()
        out = browser.post(f"{page}/logout", data={"csrf": "0" * 64}, follow_redirects=False)
        assert out.status_code == 303 and out.headers["location"] == f"{page}/login"


@pytest.mark.parametrize(
    "path", ["/monitor/login", "/monitor", "/review/login", "/review", "/monitor?since=2d"]
)
def test_pages_carry_the_security_headers(browser: TestClient, db: Database, path: str) -> None:
    _logged_in(browser, "/review", _key(db, "reviewer"))
    page = browser.get(path, follow_redirects=False)
    assert page.status_code == 200, page.text
    csp = page.headers["content-security-policy"]
    assert "default-src 'self'" in csp and "frame-ancestors 'none'" in csp
    assert page.headers["x-content-type-options"] == "nosniff"
    assert page.headers["cache-control"] == "no-store"
    assert "<style" not in page.text  # the CSP would block it: styles come from /static
    assert browser.get("/static/monitor.css").status_code == 200


def test_a_new_login_ends_the_previous_session(browser: TestClient, db: Database) -> None:
    key = _key(db, "reviewer")
    first = _logged_in(browser, "/review", key)
    second = _logged_in(browser, "/review", key)
    assert first != second
    browser.cookies.clear()
    browser.cookies.set("cartag_session", first)
    assert browser.get("/review", follow_redirects=False).status_code == 303


@pytest.mark.parametrize("page", ["/fix", "/review", "/monitor"])
def test_a_long_page_address_still_gets_the_login_form(browser: TestClient, page: str) -> None:
    # A page URL over 512 characters made the login form a JSON 422 (/fix and /monitor).
    long_next = f"{page}?utm=" + "x" * 600
    response = browser.get(f"{page}/login", params={"next": long_next})
    assert response.status_code == 200, response.text
    assert "text/html" in response.headers["content-type"]
    assert long_next in response.text  # under 2,048 characters: kept
    too_long = f"{page}?utm=" + "x" * 3000
    response = browser.get(f"{page}/login", params={"next": too_long})
    assert response.status_code == 200 and too_long not in response.text


@pytest.mark.parametrize("path", ["/fix/login", "/fix/logout", "/review/login", "/monitor/login"])
def test_a_client_that_leaves_mid_form_is_a_400_not_an_error(
    browser: TestClient, path: str, caplog: pytest.LogCaptureFixture
) -> None:
    # The body never arrives: the server read a disconnect and logged an unhandled error.
    app = browser.app
    messages: list[dict[str, object]] = []

    async def receive() -> dict[str, object]:
        return {"type": "http.disconnect"}

    async def send(message: dict[str, object]) -> None:
        messages.append(message)

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "query_string": b"",
        "headers": [
            (b"host", b"testserver"),
            (b"content-type", b"application/x-www-form-urlencoded"),
            (b"content-length", b"100"),
        ],
        "client": ("127.0.0.1", 5000),
        "server": ("testserver", 80),
    }
    with caplog.at_level("INFO"):
        browser.portal.call(app, scope, receive, send)  # type: ignore[union-attr,arg-type]
    start = next(m for m in messages if m["type"] == "http.response.start")
    assert start["status"] == 400
    assert not [r for r in caplog.records if r.levelname == "ERROR"]


@pytest.mark.parametrize(
    ("target", "expected"),
    [
        ("/fix/dealer-1?page=2", "/fix/dealer-1?page=2"),
        ("/fix", "/fix"),
        ("/fix?x=1", "/fix?x=1"),
        ("/fix/../v1/jobs", "/fix"),  # leaves the area
        ("/fix/%2e%2E/v1/jobs", "/fix"),
        ("/fix/./x", "/fix"),
        ("/fixes", "/fix"),  # another path that only starts alike
        ("//evil.example/x", "/fix"),
        ("/fix/a?next=../x", "/fix/a?next=../x"),  # dots in the query are the page's own
    ],
)
def test_a_login_goes_back_only_to_a_page_of_its_area(target: str, expected: str) -> None:
    assert browser_module.safe_next(target, "/fix") == expected


@pytest.mark.parametrize(
    "pasted", ["KEY", " KEY ", "Bearer KEY", "bearer  KEY", "'KEY'", '"KEY"', "`Bearer KEY`"]
)
def test_a_key_pasted_with_its_header_or_quotes_logs_in(
    browser: TestClient, db: Database, pasted: str
) -> None:
    key = _key(db, "reviewer")
    response = log_in(browser, "/review", pasted.replace("KEY", key))
    assert response.status_code == 303, response.text


@pytest.mark.parametrize("page", ["/fix", "/review", "/monitor"])
def test_an_odd_login_form_gets_the_form_again(browser: TestClient, page: str) -> None:
    form = browser.get(f"{page}/login")
    csrf = form_csrf(form.text)
    for data in (
        {"key": "x" * 5000, "csrf": csrf},  # too large
        {"key": "k", "csrf": csrf, "a": "1", "b": "2", "c": "3"},  # not this form's fields
    ):
        response = browser.post(f"{page}/login", data=data, follow_redirects=False)
        assert response.status_code == 422
        assert "text/html" in response.headers["content-type"]
        assert "login form" in response.text and 'name="key"' in response.text


@pytest.mark.parametrize(
    ("page", "deep"),
    [
        ("/review", "/review/cars@1?mode=color"),
        ("/monitor", "/monitor?since=2d"),
        ("/fix", "/fix/dealer-1?page=2"),
    ],
)
def test_a_key_without_the_role_gets_a_login_form_back_to_the_page_asked_for(
    browser: TestClient, db: Database, page: str, deep: str
) -> None:
    # Logged in (through its own area's form) with a key that may not see the page: the
    # form shown used to lead back to the area's root, not to the page asked for.
    other = "/fix" if page != "/fix" else "/review"
    role = "fixer" if page != "/fix" else "reviewer"
    _logged_in(browser, other, _key(db, role))
    refused = browser.get(deep, follow_redirects=False)
    assert refused.status_code == 403, refused.text
    assert f'name="next" value="{html.escape(deep)}"' in refused.text
