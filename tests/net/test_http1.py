"""The minimal HTTP/1.1 connection: strict head parsing, and reading from a real socket."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterator
from http.server import BaseHTTPRequestHandler
from typing import TypeVar

import httpx
import pytest

from cartag.net.http1 import (
    MAX_HEAD_BYTES,
    Connection,
    Head,
    NoAnswerError,
    open_connection,
    parse_head,
)
from tests.net.test_fetch import _free_port
from tests.support.http_server import ImageServer

T = TypeVar("T")
_GET = b"GET /a HTTP/1.1\r\nHost: a.test\r\n\r\n"


def test_parse_head_reads_status_fields_and_version() -> None:
    head = parse_head(b'HTTP/1.1 304 Not Modified\r\nETag: "v1"\r\nX-A:  1 \r\nX-A: 2')
    assert head == Head(304, [("etag", '"v1"'), ("x-a", "1"), ("x-a", "2")], True)
    assert parse_head(b"HTTP/1.0 200") == Head(200, [], False)  # no reason phrase


@pytest.mark.parametrize(
    "raw",
    [
        b"HTTP/1.1 304 Not Modified\nETag: x",  # bare line feed
        b"HTTP/2 304 Not Modified",
        b"HTTP/1.1 30 Short",
        b"ICY 200 OK",
        b"HTTP/1.1 304 Not Modified\r\n folded: value",
        b"HTTP/1.1 304 Not Modified\r\nno colon here",
        b"HTTP/1.1 304 Not Modified\r\nbad name: x",
        b"HTTP/1.1 304 Not Modified\r\nX-Who: caf\xc3\xa9",
        b"HTTP/1.1 304 Not Modified\r\nX-Ctl: a\x01b",
    ],
)
def test_parse_head_refuses_what_it_does_not_understand_exactly(raw: bytes) -> None:
    assert parse_head(raw) is None


@pytest.fixture
def server() -> Iterator[ImageServer]:
    with ImageServer() as srv:
        yield srv
        assert srv.errors == []


def _exchange(server: ImageServer, read: Callable[[Connection], Awaitable[T]]) -> T:
    """Connect to ``server``, send a GET of /a and return what ``read`` makes of the answer."""

    async def go() -> T:
        connection = await open_connection(
            "127.0.0.1", server.port, tls=None, server_name=None, timeout_s=1
        )
        try:
            connection.send(_GET)
            return await read(connection)
        finally:
            connection.close()

    return asyncio.run(go())


def _pieces(*parts: bytes, close: bool = False) -> Callable[[BaseHTTPRequestHandler], None]:
    def answer(handler: BaseHTTPRequestHandler) -> None:
        for part in parts:
            handler.wfile.write(part)
            handler.wfile.flush()
            time.sleep(0.02)
        handler.close_connection = close

    return answer


def test_a_head_split_across_packets_is_put_together(server: ImageServer) -> None:
    server.add_handler(
        "/a", _pieces(b"HTTP/1.1 304 Not Mod", b"ified\r\nETag: x\r", b"\n\r", b"\n")
    )

    async def read(connection: Connection) -> bytes:
        head = await connection.read_head(1.0)
        assert connection.usable  # nothing after the head
        return head

    assert _exchange(server, read) == b"HTTP/1.1 304 Not Modified\r\nETag: x"


def test_the_body_stays_buffered_after_the_head(server: ImageServer) -> None:
    server.add_handler("/a", _pieces(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhel", b"lo"))

    async def read(connection: Connection) -> list[bytes]:
        await connection.read_head(1.0)
        first = await connection.read_body(5, 1.0)
        return [first, await connection.read_body(5 - len(first), 1.0)]

    assert b"".join(_exchange(server, read)) == b"hello"


@pytest.mark.parametrize(
    ("parts", "error", "words"),
    [
        ((), NoAnswerError, "without sending a response"),
        ((b"HTTP/1.1 304 Not",), httpx.RemoteProtocolError, "within the head"),
        (
            (b"HTTP/1.1 304 Not Modified\r\nX: " + b"y" * MAX_HEAD_BYTES,),
            httpx.RemoteProtocolError,
            "over",
        ),
    ],
    ids=["closed-at-once", "closed-within-the-head", "head-too-long"],
)
def test_read_head_failures(
    server: ImageServer, parts: tuple[bytes, ...], error: type[Exception], words: str
) -> None:
    server.add_handler("/a", _pieces(*parts, close=True))

    async def read(connection: Connection) -> bytes:
        return await connection.read_head(1.0)

    with pytest.raises(error, match=words):
        _exchange(server, read)


def test_silence_is_a_read_timeout(server: ImageServer) -> None:
    server.add_handler("/a", lambda handler: time.sleep(0.5))

    async def read(connection: Connection) -> bytes:
        return await connection.read_head(0.1)

    with pytest.raises(httpx.ReadTimeout):
        _exchange(server, read)


def test_a_body_cut_short_is_a_protocol_error(server: ImageServer) -> None:
    head = b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n"
    server.add_handler("/a", _pieces(head + b"abc", close=True))

    async def read(connection: Connection) -> bytes:
        await connection.read_head(1.0)
        body = await connection.read_body(10, 1.0)
        return body + await connection.read_body(10 - len(body), 1.0)

    with pytest.raises(httpx.RemoteProtocolError, match="complete message body"):
        _exchange(server, read)


def test_connecting_to_a_closed_port_is_a_connect_error() -> None:
    async def go() -> Connection:
        return await open_connection(
            "127.0.0.1", _free_port(), tls=None, server_name=None, timeout_s=1
        )

    with pytest.raises(httpx.ConnectError):
        asyncio.run(go())
