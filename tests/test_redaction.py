"""URL passwords and tokens: redacted for storage and for every log line."""

from __future__ import annotations

import asyncio
import io
import ipaddress
import json
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

from cartag.errors import FetchError
from cartag.logs import make_handler
from cartag.net.fetch import Fetcher
from cartag.net.outcomes import FetchRequest
from cartag.redaction import has_password, redact_text, redact_url, strip_password
from cartag.settings import Settings
from tests.support.http_server import ImageServer
from tests.support.images import jpeg_bytes


@pytest.mark.parametrize(
    ("url", "stored"),
    [
        ("https://alice:pa55@cdn.example/a.jpg?x=1", "https://alice:***@cdn.example/a.jpg?x=1"),
        ("https://alice:p:a@ss@cdn.example/a.jpg", "https://alice:***@cdn.example/a.jpg"),
        ("https://:pa55@cdn.example/a.jpg", "https://:***@cdn.example/a.jpg"),
        ("https://alice@cdn.example/a.jpg", "https://alice@cdn.example/a.jpg"),
        ("https://cdn.example/a.jpg?token=t", "https://cdn.example/a.jpg?token=t"),
        ("not a url", "not a url"),
    ],
)
def test_strip_password_keeps_the_rest_of_the_url(url: str, stored: str) -> None:
    assert strip_password(url) == stored
    assert strip_password(stored) == stored
    assert has_password(url) == (url != stored)


def test_redact_url_also_hides_sensitive_query_values() -> None:
    url = "https://u:p@hooks.example/h?token=abc&id=7&X-Amz-Signature=ff&api_key=k&sig="
    assert redact_url(url) == (
        "https://u:***@hooks.example/h?token=***&id=7&X-Amz-Signature=***&api_key=***&sig="
    )
    assert redact_url("https://hooks.example/h") == "https://hooks.example/h"


def test_redact_text_finds_urls_anywhere() -> None:
    line = (
        'HTTP Request: GET http://bob:hunter2@93.184.216.34/a.jpg?access_token=xyz&w=1 "200"; '
        "callback https://h.example/cb?secret=s3 failed"
    )
    assert redact_text(line) == (
        'HTTP Request: GET http://bob:***@93.184.216.34/a.jpg?access_token=***&w=1 "200"; '
        "callback https://h.example/cb?secret=*** failed"
    )
    assert redact_text("nothing to hide: a@b, x=1") == "nothing to hide: a@b, x=1"


@pytest.fixture
def captured() -> Iterator[io.StringIO]:
    """The root logger at INFO into cartag's JSON handler, as `cartag serve` sets it up."""
    stream = io.StringIO()
    handler = make_handler("json", stream)
    root = logging.getLogger()
    level = root.level
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    try:
        yield stream
    finally:
        root.removeHandler(handler)
        root.setLevel(level)


def test_httpx_request_lines_and_tracebacks_are_redacted(
    captured: io.StringIO, tmp_path: Path
) -> None:
    settings = Settings(
        data_dir=tmp_path, allowed_networks=[ipaddress.ip_network("127.0.0.0/8")], retries=0
    )
    with ImageServer() as server:
        server.add_file("/a.jpg", jpeg_bytes())
        url = server.url("/a.jpg?token=t0ken").replace("http://", "http://alice:pa55word@")

        async def fetch() -> None:
            async with Fetcher(settings) as fetcher:
                await fetcher.fetch(FetchRequest(url))

        asyncio.run(fetch())
    try:
        raise FetchError(f"{url} answered HTTP 500", "http_500")
    except FetchError:
        logging.getLogger("cartag.tests").exception("download of %s failed", url)

    lines = [json.loads(line) for line in captured.getvalue().splitlines()]
    request_lines = [line["msg"] for line in lines if line["msg"].startswith("HTTP Request:")]
    assert request_lines and "alice:***@" in request_lines[0] and "token=***" in request_lines[0]
    (failure,) = [line for line in lines if line["logger"] == "cartag.tests"]
    assert "alice:***@" in failure["msg"] and "alice:***@" in failure["exc"]
    text = captured.getvalue()
    assert "pa55word" not in text and "t0ken" not in text
