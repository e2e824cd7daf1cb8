"""The request-context middleware: request ids, access lines, route labels."""

from __future__ import annotations

import asyncio
import io
import json
import logging
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from cartag.api.middleware import UNMATCHED, RequestContextMiddleware
from cartag.logs import current_request_id, make_handler
from cartag.telemetry import Telemetry

log = logging.getLogger("cartag.tests.endpoint")


class RecordingTelemetry(Telemetry):
    """Keeps what the middleware reports."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, str, int]] = []

    def request_finished(self, method: str, route: str, status: int, duration_s: float) -> None:
        assert duration_s >= 0
        self.requests.append((method, route, status))


@pytest.fixture
def captured() -> Iterator[io.StringIO]:
    stream = io.StringIO()
    handler = make_handler("json", stream)
    loggers = [logging.getLogger("cartag.access"), log]
    for logger in loggers:
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
    yield stream
    for logger in loggers:
        logger.removeHandler(handler)


def _lines(stream: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def _app(telemetry: Telemetry) -> FastAPI:
    app = FastAPI()

    @app.get("/items/{item_id}")
    async def item(item_id: str) -> dict[str, Any]:
        log.info("serving %s", item_id, extra={"item": item_id})
        in_thread = await asyncio.to_thread(current_request_id)
        return {"request_id": current_request_id(), "in_thread": in_thread}

    @app.get("/boom")
    async def boom() -> None:
        raise RuntimeError("broken")

    app.add_middleware(RequestContextMiddleware, telemetry=telemetry)
    return app


def test_middleware_assigns_propagates_and_echoes_ids(captured: io.StringIO) -> None:
    telemetry = RecordingTelemetry()
    with TestClient(_app(telemetry), raise_server_exceptions=False) as client:
        given = client.get("/items/42", headers={"X-Request-ID": "client-id-1"})
        generated = client.get("/items/43", headers={"X-Request-ID": "bad id\t"})
        missing = client.get("/nowhere/at/all")
        failed = client.get("/boom")
    assert given.headers["X-Request-ID"] == "client-id-1"
    assert given.json() == {"request_id": "client-id-1", "in_thread": "client-id-1"}
    rid = generated.headers["X-Request-ID"]
    assert rid != "bad id\t" and generated.json()["request_id"] == rid
    assert missing.status_code == 404 and failed.status_code == 500
    assert telemetry.requests == [
        ("GET", "/items/{item_id}", 200),
        ("GET", "/items/{item_id}", 200),
        ("GET", UNMATCHED, 404),
        ("GET", "/boom", 500),
    ]
    lines = _lines(captured)
    endpoint = [line for line in lines if line["logger"] == log.name]
    assert endpoint[0]["request_id"] == "client-id-1" and endpoint[0]["item"] == "42"
    access = [line for line in lines if line["logger"] == "cartag.access"]
    assert [a["status"] for a in access] == [200, 200, 404, 500]
    assert access[0]["request_id"] == "client-id-1" and access[0]["route"] == "/items/{item_id}"
    assert access[1]["request_id"] == rid
    assert current_request_id() is None
