"""GET /monitor: key or login cookie with the reviewer role, charts, flagged advertisers."""

from __future__ import annotations

import datetime as dt
import re

import pytest
from fastapi.testclient import TestClient

from cartag.clock import FakeClock
from cartag.store import jobs as job_repo
from cartag.store.db import Database
from tests.api.conftest import AppFactory, make_headers
from tests.support.browser import form_csrf, log_in
from tests.support.monitoring import TODAY, seed_monitoring

pytestmark = pytest.mark.slow

NOW = dt.datetime.combine(TODAY, dt.time(15), dt.UTC)


@pytest.fixture
def monitor(make_client: AppFactory, db: Database) -> TestClient:
    seed_monitoring(db)
    # No job runner: a queued job must stay queued while the page is read (the runner
    # would claim it within its poll interval, and the job panel would race it).
    return make_client(db, clock=FakeClock(NOW), run_jobs=False)


def test_the_page_shows_charts_and_flags_jumps(monitor: TestClient, db: Database) -> None:
    headers = make_headers(db, "reviewer")
    page = monitor.get("/monitor?since=7d", headers=headers)
    assert page.status_code == 200, page.text
    assert page.headers["content-type"].startswith("text/html")
    html = page.text
    assert html.count("<svg") >= 4  # version rates, advertiser rates, type and color mix
    assert "Model <code>m2</code>" in html
    jumped_rows = html.count('<tr class="num jumped">')
    assert jumped_rows == 2
    assert html.index(">jumpy<") < html.index(">steady<")  # flagged advertisers come first
    assert "baseline is its own rate over the 28 days before" in html
    one = monitor.get("/monitor?since=2w&advertiser=steady", headers=headers)
    assert one.status_code == 200 and ">jumpy<" not in one.text and ">steady<" in one.text
    assert "Model <code>m1</code>" in one.text  # two weeks reach back before the switch


def test_roles_and_bad_input(monitor: TestClient, db: Database) -> None:
    classifier = monitor.get("/monitor", headers=make_headers(db, "classifier"))
    assert classifier.status_code == 403
    assert classifier.json()["error"]["code"] == "forbidden"
    unknown = monitor.get("/monitor", headers={"Authorization": "Bearer ctg_0000_nope"})
    assert unknown.status_code == 401
    admin = make_headers(db, "admin")
    assert monitor.get("/monitor", headers=admin).status_code == 200
    bad = monitor.get("/monitor?since=lastweek", headers=admin)
    assert bad.status_code == 422
    assert bad.json()["error"]["field"] == "since" and "7d" in bad.json()["error"]["message"]


def test_browser_login_opens_a_session_in_an_httponly_cookie(
    monitor: TestClient, db: Database
) -> None:
    anonymous = monitor.get("/monitor?since=24h", follow_redirects=False)
    assert anonymous.status_code == 303
    assert anonymous.headers["location"] == "/monitor/login?next=%2Fmonitor%3Fsince%3D24h"
    form = monitor.get("/monitor/login?next=/monitor%3Fsince%3D24h")
    assert form.status_code == 200 and 'name="key"' in form.text
    csrf = form_csrf(form.text)

    wrong = monitor.post(
        "/monitor/login", data={"key": "ctg_0000_nope", "csrf": csrf}, follow_redirects=False
    )
    assert wrong.status_code == 401 and "unknown API key" in wrong.text
    empty = monitor.post("/monitor/login", data={"key": "", "csrf": csrf}, follow_redirects=False)
    assert empty.status_code == 422
    classifier_key = make_headers(db, "classifier")["Authorization"].split()[1]
    denied = monitor.post(
        "/monitor/login", data={"key": classifier_key, "csrf": csrf}, follow_redirects=False
    )
    assert denied.status_code == 403 and "reviewer" in denied.text

    key = make_headers(db, "reviewer")["Authorization"].split()[1]
    login = monitor.post(
        "/monitor/login",
        data={"key": key, "next": "/monitor?since=24h", "csrf": csrf},
        follow_redirects=False,
    )
    assert login.status_code == 303 and login.headers["location"] == "/monitor?since=24h"
    cookie = login.headers["set-cookie"].lower()
    assert "cartag_session=" in cookie and "httponly" in cookie and "samesite=strict" in cookie
    assert key.lower() not in cookie
    page = monitor.get("/monitor?since=24h", follow_redirects=False)
    assert page.status_code == 200 and "<svg" in page.text

    out = monitor.post(
        "/monitor/logout", data={"csrf": form_csrf(page.text)}, follow_redirects=False
    )
    assert out.status_code == 303
    assert monitor.get("/monitor", follow_redirects=False).status_code == 303


def test_login_never_redirects_off_site(monitor: TestClient, db: Database) -> None:
    key = make_headers(db, "reviewer")["Authorization"].split()[1]
    for target in ("https://evil.example/", "//evil.example/monitor", "/v1/classify"):
        response = log_in(monitor, "/monitor", key, next_url=target)
        assert response.status_code == 303 and response.headers["location"] == "/monitor"


def test_login_form_with_extra_fields_is_a_422(monitor: TestClient) -> None:
    response = monitor.post("/monitor/login", content="a=1&b=2&c=3&d=4&e=5&key=x")
    assert response.status_code == 422  # the form again, saying why (a browser posted it)
    assert "text/html" in response.headers["content-type"]
    assert "fields this page does not send" in response.text


def test_the_operational_panels_show_this_server_and_the_store(
    monitor: TestClient, db: Database
) -> None:
    headers = make_headers(db, "reviewer")
    with db.write() as session:
        job_repo.create_job(
            session,
            advertiser_id="steady",
            items=[("https://cdn.example/a.jpg", None)],
            callback_url=None,
            now=NOW - dt.timedelta(minutes=5),
        )
    assert monitor.get("/v1/images/nope", headers=headers).status_code == 404
    html = monitor.get("/monitor?since=7d", headers=headers).text
    row = re.search(r"<td><code>/v1/images/\{image_key\}</code></td>(.*?)</tr>", html, re.S)
    assert row is not None
    cells = re.findall(r"<td>([^<]*)</td>", row.group(1))
    assert (cells[1], cells[-2], cells[-1]) == ("1", "1", "0")  # 1 request: a 4xx, no 5xx
    jobs = html[html.index('id="panel-jobs"') :]
    assert re.search(r"waiting to start</dt><dd class=\"flag\">1</dd>", jobs)
    assert "oldest waiting for</dt><dd>5 min</dd>" in jobs
    versions = html[html.index('id="panel-versions"') : html.index('id="panel-skips"')]
    assert "<code>m2</code>" in versions
