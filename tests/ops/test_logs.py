"""JSON logs and the request-context middleware: ids, access lines, route labels."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import sys
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from cartag.errors import InputError
from cartag.ops.logs import (
    JsonFormatter,
    accept_request_id,
    configure_logging,
    current_request_id,
    make_handler,
    request_id_scope,
    request_id_var,
)
from cartag.ops.middleware import UNMATCHED, RequestContextMiddleware
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


def test_json_formatter_writes_one_object_per_line() -> None:
    record = logging.LogRecord("cartag.x", logging.WARNING, "f.py", 1, "a %s b", ("x",), None)
    record.job_id = "j-1"
    token = request_id_var.set("rid-1")
    try:
        line = JsonFormatter().format(record)
    finally:
        request_id_var.reset(token)
    body = json.loads(line)
    assert body["msg"] == "a x b" and body["level"] == "warning" and body["logger"] == "cartag.x"
    assert body["request_id"] == "rid-1" and body["job_id"] == "j-1"
    assert body["ts"].endswith("Z") and "\n" not in line


def test_json_formatter_includes_the_traceback() -> None:
    try:
        raise ValueError("boom\nsecond line")
    except ValueError:
        record = logging.LogRecord("c", logging.ERROR, "f", 1, "failed", None, sys.exc_info())
    body = json.loads(JsonFormatter().format(record))
    assert "ValueError: boom" in body["exc"] and body["request_id"] is None


def test_accept_request_id() -> None:
    assert accept_request_id("abc-123_X.y:z") == "abc-123_X.y:z"
    for bad in (None, "", "a b", "x" * 129, "line\nbreak", "<script>"):
        generated = accept_request_id(bad)
        assert generated != bad and len(generated) == 32


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


def test_configure_logging_sends_everything_through_one_json_handler(
    capsys: pytest.CaptureFixture[str],
) -> None:
    root = logging.getLogger()
    saved = (list(root.handlers), root.level)
    uvicorn = logging.getLogger("uvicorn.error")
    saved_uvicorn = (list(uvicorn.handlers), uvicorn.propagate, uvicorn.disabled, uvicorn.level)
    # As a logging.config call earlier in the same process may leave it.
    uvicorn.disabled = True
    uvicorn.setLevel(logging.WARNING)
    try:
        configure_logging("json", "info")
        token = request_id_var.set("rid-9")
        try:
            uvicorn.info("started")
            logging.getLogger("cartag.x").debug("hidden at info")
        finally:
            request_id_var.reset(token)
        line = json.loads(capsys.readouterr().err.strip())
        assert line["logger"] == "uvicorn.error" and line["request_id"] == "rid-9"
        configure_logging("text", "trace")
        logging.getLogger("cartag.x").debug("now shown")
        assert "DEBUG" in capsys.readouterr().err
        with pytest.raises(InputError, match="unknown log level"):
            configure_logging("json", "loud")
    finally:
        for handler in list(root.handlers):
            root.removeHandler(handler)
        for handler in saved[0]:
            root.addHandler(handler)
        root.setLevel(saved[1])
        uvicorn.handlers[:] = saved_uvicorn[0]
        uvicorn.propagate = saved_uvicorn[1]
        uvicorn.disabled = saved_uvicorn[2]
        uvicorn.setLevel(saved_uvicorn[3])


def test_request_id_scope_reaches_threads_and_is_restored() -> None:
    async def in_thread() -> str | None:
        return await asyncio.to_thread(current_request_id)

    assert current_request_id() is None
    with request_id_scope("job:42"):
        assert asyncio.run(in_thread()) == "job:42"
        with request_id_scope("job:43"):
            assert current_request_id() == "job:43"
        assert current_request_id() == "job:42"
    assert current_request_id() is None
