"""Request limits (issue 13): body size before parsing, integers within the database's.

A body over ``CARTAG_MAX_BODY_BYTES`` (``CARTAG_MAX_JOB_BODY_BYTES`` for POST /v1/jobs) is
a 413 ``body_too_large`` before anything reads it, whether it declares its length or comes
chunked. An integer id, page or offset past what the database holds is a 422, not a 500.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from typing import Any

from fastapi.testclient import TestClient
from starlette.types import Message, Receive, Scope, Send

from cartag.api.limits import BodyLimit, BodyLimitMiddleware
from cartag.settings import Settings
from cartag.store.blobs import MemoryBlobStore
from cartag.store.db import Database
from tests.api.conftest import AppFactory, make_headers
from tests.support.browser import log_in
from tests.support.fakes import FixedClassifier, OneImageFetcher
from tests.web.seed import seed_review

HUGE = "99999999999999999999"  # past 2**63 - 1: SQLite raised OverflowError (a 500)


def _body(images: int, url_length: int = 40) -> bytes:
    url = "https://cdn.example/" + "x" * (url_length - 20)
    payload = {
        "advertiser_id": "a",
        "images": [{"url": url, "scrape_color": "Burgundy"} for _ in range(images)],
    }
    return json.dumps(payload).encode()


def _client(make_client: AppFactory, db: Database, settings: Settings, **limits: int) -> TestClient:
    return make_client(
        db,
        settings=settings.model_copy(update=limits),
        classifier=FixedClassifier(),
        fetcher=OneImageFetcher(settings),
    )


def _too_large(response: Any, setting: str) -> None:
    assert response.status_code == 413, response.text
    error = response.json()["error"]
    assert error["code"] == "body_too_large" and error["field"] == "body"
    assert setting in error["message"]


def test_the_default_limit_fits_1000_images_with_long_urls() -> None:
    settings = Settings()
    assert len(_body(1000, url_length=2048)) <= settings.max_body_bytes
    assert settings.max_body_bytes <= 3 * 1024 * 1024


def test_a_declared_length_over_the_limit_is_refused_unread(
    make_client: AppFactory, sqlite_db: Database, settings: Settings
) -> None:
    client = _client(make_client, sqlite_db, settings, max_body_bytes=10_000)
    body = _body(1000)  # about 70 kB: 1,000 images fit the image limit, not this one
    # Before authentication too: nothing of the request is looked at.
    response = client.post(
        "/v1/classify", content=body, headers={"Content-Type": "application/json"}
    )
    _too_large(response, "CARTAG_MAX_BODY_BYTES")
    assert "10,000 bytes" in response.json()["error"]["message"]
    assert response.headers["connection"] == "close"
    headers = {**make_headers(sqlite_db, "classifier"), "Content-Type": "application/json"}
    assert client.post("/v1/classify", content=_body(10), headers=headers).status_code == 200


def test_a_chunked_body_is_counted_as_it_streams(
    make_client: AppFactory, sqlite_db: Database, settings: Settings
) -> None:
    client = _client(make_client, sqlite_db, settings, max_body_bytes=10_000)
    headers = {**make_headers(sqlite_db, "classifier"), "Content-Type": "application/json"}

    def chunks(body: bytes) -> Iterator[bytes]:
        # A generator has no length: httpx sends it chunked, without Content-Length.
        for start in range(0, len(body), 1000):
            yield body[start : start + 1000]

    response = client.post("/v1/classify", content=chunks(_body(1000)), headers=headers)
    assert "content-length" not in response.request.headers
    _too_large(response, "CARTAG_MAX_BODY_BYTES")
    small = client.post("/v1/classify", content=chunks(_body(10)), headers=headers)
    assert small.status_code == 200, small.text
    assert len(small.json()["results"]) == 10


def test_jobs_have_their_own_limit(
    make_client: AppFactory, sqlite_db: Database, settings: Settings
) -> None:
    client = _client(
        make_client, sqlite_db, settings, max_body_bytes=10_000, max_job_body_bytes=100_000
    )
    headers = {**make_headers(sqlite_db, "classifier"), "Content-Type": "application/json"}
    response = client.post("/v1/jobs", content=_body(1000), headers=headers)  # ~70 kB
    assert response.status_code == 202, response.text
    _too_large(
        client.post("/v1/jobs", content=_body(2000), headers=headers), "CARTAG_MAX_JOB_BODY_BYTES"
    )


def test_the_advice_fits_the_route(
    make_client: AppFactory, sqlite_db: Database, settings: Settings
) -> None:
    client = _client(make_client, sqlite_db, settings, max_body_bytes=10_000)
    headers = {"Content-Type": "application/json"}
    classify = client.post("/v1/classify", content=_body(1000), headers=headers)
    _too_large(classify, "CARTAG_MAX_BODY_BYTES")
    assert "fewer images" in classify.json()["error"]["message"]
    # A fix is a few fields: "send fewer images" would be no help there.
    fix = client.put("/v1/images/" + "a" * 64 + "/fix", content=_body(1000), headers=headers)
    _too_large(fix, "CARTAG_MAX_BODY_BYTES")
    message = fix.json()["error"]["message"]
    assert "images" not in message and "a few fields" in message


def test_the_middleware_stops_reading_at_the_limit() -> None:
    reached: list[bytes] = []
    read = 0

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        reached.append((await receive())["body"])

    async def receive() -> Message:
        nonlocal read
        read += 1
        return {"type": "http.request", "body": b"x" * 100, "more_body": True}  # endless

    sent: list[Message] = []

    async def send(message: Message) -> None:
        sent.append(message)

    limit = BodyLimit(1000, "CARTAG_MAX_BODY_BYTES", "send less")
    middleware = BodyLimitMiddleware(app, default=limit)
    scope = {"type": "http", "method": "POST", "path": "/v1/classify", "headers": []}
    asyncio.run(middleware(scope, receive, send))
    assert not reached and read == 11  # 1,100 bytes read of an endless body, then the answer
    assert sent[0]["status"] == 413


_HUGE_REQUESTS: list[tuple[str, str, object]] = [
    ("GET", "/v1/datasets/{ref}/review/items?page=" + HUGE, None),
    ("GET", "/v1/datasets/{ref}/review/decisions?item_id=" + HUGE, None),
    ("POST", "/v1/datasets/{ref}/review/decisions", {"item_id": int(HUGE), "action": "accept"}),
    ("POST", "/v1/datasets/{ref}/review/items/" + HUGE + "/undo", None),
    ("GET", "/review/{ref}/thumb/" + HUGE, None),
    ("GET", "/v1/conflicts?offset=" + HUGE, None),
]


def test_huge_integers_are_422_not_500(make_client: AppFactory, db: Database) -> None:
    blobs = MemoryBlobStore()
    ref, _ = seed_review(db, blobs)  # a real draft: an unknown one was a 404 first
    client = make_client(db, blobs=blobs, classifier=FixedClassifier())
    headers = make_headers(db, "reviewer")
    for method, path, body in _HUGE_REQUESTS:
        response = client.request(method, path.format(ref=ref), json=body, headers=headers)
        assert response.status_code == 422, (path, response.text)
        assert response.json()["error"]["code"] == "invalid_input"
    # The review page, logged in as a browser is.
    key = headers["Authorization"].removeprefix("Bearer ")
    assert log_in(client, "/review", key).status_code == 303
    response = client.get(f"/review/{ref}?page={HUGE}")
    assert response.status_code == 422, response.text
    assert response.json()["error"]["field"] == "page"
    assert client.get(f"/review/{ref}?page=2").status_code == 200
