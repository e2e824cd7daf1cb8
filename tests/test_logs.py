"""JSON logs carrying the request id: the formatter, id checks, the scope, configuration."""

from __future__ import annotations

import asyncio
import json
import logging
import sys

import pytest

from cartag.errors import InputError
from cartag.logs import (
    JsonFormatter,
    accept_request_id,
    configure_logging,
    current_request_id,
    request_id_scope,
    request_id_var,
)


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
