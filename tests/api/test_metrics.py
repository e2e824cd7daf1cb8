"""GET /metrics end to end: what a classify, a fix and the HTTP layer record; auth option."""

from __future__ import annotations

import datetime as dt
from collections import Counter
from typing import Any

import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import func, select

from cartag.clock import FakeClock
from cartag.settings import Settings
from cartag.store.db import Database
from cartag.store.monitoring import fixes_between
from cartag.store.tables import ClassifyDailyRow
from tests.api.conftest import AppFactory, make_headers
from tests.support.factories import add_image
from tests.support.http_server import ImageServer
from tests.support.images import jpeg_bytes

pytestmark = pytest.mark.slow

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def _scrape(client: TestClient, **kwargs: Any) -> Samples:
    response = client.get("/metrics", **kwargs)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain")
    out: Samples = {}
    for family in text_string_to_metric_families(response.text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def _classify(client: TestClient, headers: dict[str, str], urls: list[str]) -> dict[str, Any]:
    body = {"advertiser_id": "dealer-7", "images": [{"url": u} for u in urls]}
    response = client.post("/v1/classify", json=body, headers=headers)
    assert response.status_code == 200, response.text
    result: dict[str, Any] = response.json()
    return result


def test_classify_fix_and_requests_show_up_in_metrics(
    client: TestClient,
    db: Database,
    classify_headers: dict[str, str],
    fixer_headers: dict[str, str],
    server: ImageServer,
) -> None:
    server.add_file("/a.jpg", jpeg_bytes(color=(200, 20, 20)))
    server.add_file("/b.jpg", jpeg_bytes(color=(20, 20, 200)))
    server.add_status("/gone.jpg", 404)
    urls = [server.url("/a.jpg"), server.url("/b.jpg"), server.url("/gone.jpg")]
    first = _classify(client, classify_headers, urls)
    _classify(client, classify_headers, urls)
    key = first["results"][0]["image_key"]
    assert client.get(f"/v1/images/{key}", headers=classify_headers).status_code == 200
    fixed = client.put(
        f"/v1/images/{key}/fix",
        json={
            "advertiser_id": "dealer-7",
            "scope": "advertiser",
            "image_type": "Dealer",
            "color": "Red",
        },
        headers=fixer_headers,
    )
    assert fixed.status_code == 200, fixed.text
    assert client.get("/v1/jobs/no-such-job", headers=classify_headers).status_code == 404

    s = _scrape(client)
    assert s[("cartag_images_total", (("source", "model"), ("status", "classified")))] == 2
    assert s[("cartag_images_total", (("source", "cache"), ("status", "cached")))] == 2
    assert s[("cartag_images_total", (("source", "none"), ("status", "skipped")))] == 2
    assert s[("cartag_images_skipped_total", (("reason", "http_404"),))] == 2
    failures = ("cartag_download_failures_total", (("host", "127.0.0.1"), ("reason", "http_404")))
    assert s[failures] == 2
    assert s[("cartag_cache_hit_ratio", ())] == 0.5
    assert s[("cartag_inference_batch_size_sum", ())] == 2
    assert s[("cartag_classify_images_count", ())] == 2
    assert s[("cartag_fixes_total", (("advertiser", "dealer-7"), ("scope", "advertiser")))] == 1
    version = first["results"][0]["model_version"]
    # The session's model serves its fp32 backbone (tests/conftest.py, classifier).
    info = (
        "cartag_model_info",
        (("backbone", "efficientnet-lite0-ft@66f7335f"), ("version", version)),
    )
    assert s[info] == 1
    assert s[("cartag_queue_depth", (("queue", "jobs"),))] == 0
    assert s[("cartag_queue_oldest_age_seconds", (("queue", "jobs"),))] == 0
    # Answered (not skipped) images per advertiser and per model version.
    assert s[("cartag_advertiser_images_total", (("advertiser", "dealer-7"),))] == 4
    by_version = (("status", "cached"), ("version", version))
    assert s[("cartag_model_answers_total", by_version)] == 2

    def requests(route: str, status: str, method: str = "GET") -> float:
        labels = (("method", method), ("route", route), ("status", status))
        return s[("cartag_http_requests_total", labels)]

    assert requests("/v1/classify", "200", "POST") == 2
    assert requests("/v1/images/{image_key}", "200") == 1
    assert requests("/v1/images/{image_key}/fix", "200", "PUT") == 1
    assert requests("/v1/jobs/{job_id}", "404") == 1
    assert not any(key in str(labels) for _, labels in s)  # raw paths never become labels
    latency = (
        "cartag_http_request_duration_seconds_count",
        (("method", "POST"), ("route", "/v1/classify")),
    )
    assert s[latency] == 2

    # The same answers went into the daily rollup the monitor reads (kept in memory
    # between the writer's intervals: flushed here instead of waiting for it).
    client.app.state.cartag.service.flush_rollup()  # type: ignore[attr-defined]
    with db.read() as session:
        total = session.scalar(
            select(func.sum(ClassifyDailyRow.count)).where(
                ClassifyDailyRow.advertiser_id == "dealer-7"
            )
        )
    assert total == 4


def test_every_response_carries_a_request_id(make_client: AppFactory, sqlite_db: Database) -> None:
    client = make_client(sqlite_db)
    mine = client.get("/healthz", headers={"X-Request-ID": "scrape-42"})
    assert mine.headers["X-Request-ID"] == "scrape-42"
    fresh = client.get("/healthz", headers={"X-Request-ID": "no spaces allowed"})
    assert len(fresh.headers["X-Request-ID"]) == 32
    error = client.post("/v1/classify", json={})
    assert error.status_code == 401 and "X-Request-ID" in error.headers


def test_each_app_has_its_own_registry(make_client: AppFactory, sqlite_db: Database) -> None:
    a, b = make_client(sqlite_db), make_client(sqlite_db)
    for _ in range(3):
        a.get("/healthz")
    b.get("/healthz")
    key = (
        "cartag_http_requests_total",
        (("method", "GET"), ("route", "/healthz"), ("status", "200")),
    )
    assert _scrape(a)[key] == 3 and _scrape(b)[key] == 1


def test_metrics_can_require_a_key(
    make_client: AppFactory, sqlite_db: Database, settings: Settings
) -> None:
    client = make_client(
        sqlite_db, settings=settings.model_copy(update={"metrics_require_key": True})
    )
    missing = client.get("/metrics")
    assert missing.status_code == 401
    assert "CARTAG_METRICS_REQUIRE_KEY" in missing.json()["error"]["message"]
    wrong = client.get("/metrics", headers={"Authorization": "Bearer ctg_nope_nope"})
    assert wrong.status_code == 401
    assert _scrape(client, headers=make_headers(sqlite_db, "classifier"))


def test_fixed_images_count_as_the_monitor_does_fix_requests_each(
    make_client: AppFactory, db: Database
) -> None:
    """cartag_fixes_total counts requests; cartag_fixed_images_total each image once per
    advertiser and UTC day, the count of store.monitoring.fixes_between."""
    clock = FakeClock(dt.datetime(2026, 12, 8, 23, 0, tzinfo=dt.UTC))
    client = make_client(db, clock=clock)
    headers = make_headers(db, "fixer")
    first, second = add_image(db).image_key, add_image(db).image_key

    def fix(key: str, advertiser: str, color: str, scope: str = "advertiser") -> None:
        body = {"advertiser_id": advertiser, "scope": scope, "color": color}
        response = client.put(f"/v1/images/{key}/fix", json=body, headers=headers)
        assert response.status_code == 200, response.text

    fix(first, "dealer-7", "Blue")
    fix(first, "dealer-7", "Grey")  # a mis-click corrected: the same fixed image
    fix(first, "dealer-7", "Grey", scope="global")  # staff, in dealer-7's name, same day
    fix(first, "dealer-8", "Grey")  # another advertiser's
    fix(second, "dealer-7", "Black")
    clock.advance(3600)  # the next UTC day
    fix(first, "dealer-7", "Blue")
    s = _scrape(client)

    def fixes(advertiser: str, scope: str) -> float:
        return s[("cartag_fixes_total", (("advertiser", advertiser), ("scope", scope)))]

    assert fixes("dealer-7", "advertiser") == 4 and fixes("dealer-7", "global") == 1
    assert fixes("dealer-8", "advertiser") == 1
    fixed = {
        advertiser: s[("cartag_fixed_images_total", (("advertiser", advertiser),))]
        for advertiser in ("dealer-7", "dealer-8")
    }
    assert fixed == {"dealer-7": 3, "dealer-8": 1}
    with db.read() as session:
        rows = list(fixes_between(session, dt.date(2026, 12, 8), dt.date(2026, 12, 9)))
    assert Counter(advertiser for _, advertiser, _ in rows) == fixed
