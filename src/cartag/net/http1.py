"""A minimal HTTP/1.1 client connection: one request at a time, heads parsed strictly.

The lean revalidation path (:mod:`cartag.net.revalidate`) sends conditional GETs
over these connections. They do only what that path needs: write a request, read
the response head (status line and header fields, at most :data:`MAX_HEAD_BYTES`),
then a body framed by ``Content-Length``. :func:`parse_head` refuses whatever it
does not understand exactly (bare line feeds, folded or non-ASCII fields, a status
line that is not ``HTTP/1.x NNN``), and the caller hands such answers to the full
client instead of guessing.

Failures are raised as the httpx exceptions the full client raises in the same
situation (``ConnectError``, ``ConnectTimeout``, ``ReadTimeout``,
``RemoteProtocolError``), so the fetcher translates both alike.
"""

from __future__ import annotations

import asyncio
import re
import ssl
from dataclasses import dataclass

import httpx

# As httpcore allows (h11 with max_incomplete_event_size = 100 KiB).
MAX_HEAD_BYTES = 100 * 1024
# Reading pauses while this much body is buffered and not yet taken.
_HIGH_WATER = 1024 * 1024

# A whole head in one match: status line, then CRLF-separated fields of a token name
# and a value of printable ASCII (and tabs). Anything else does not match.
_HEAD = re.compile(
    rb"HTTP/1\.([01]) ([0-9]{3})(?: [\x20-\x7e\t]*)?"
    rb"((?:\r\n[!#$%&'*+.^_`|~0-9A-Za-z-]+:[\x20-\x7e\t]*)*)"
)


class NoAnswerError(httpx.RemoteProtocolError):
    """The server closed the connection before sending any byte of an answer."""

    def __init__(self) -> None:
        # httpcore's words for the same event.
        super().__init__("Server disconnected without sending a response.")


@dataclass(frozen=True)
class Head:
    """A parsed response head.

    Attributes:
        status: The status code.
        fields: Header fields in order, names in lower case.
        http11: Whether the server speaks HTTP/1.1 (1.0 connections are not kept).
    """

    status: int
    fields: list[tuple[str, str]]
    http11: bool


def parse_head(head: bytes) -> Head | None:
    """Parse a status line and header fields (without the blank line that ends them).

    Args:
        head: The bytes before the first ``CRLF CRLF``.

    Returns:
        The head, or None when it is not plain HTTP/1.x with CRLF line ends, token
        field names and printable ASCII values (the caller then asks the full client).
    """
    match = _HEAD.fullmatch(head)
    if match is None:
        return None
    fields = []
    for line in match[3].decode("ascii").split("\r\n")[1:]:
        name, _, value = line.partition(":")
        fields.append((name.lower(), value.strip(" \t")))
    return Head(int(match[2]), fields, match[1] == b"1")


class Connection(asyncio.Protocol):
    """One TCP (or TLS) connection, buffering what arrives until it is asked for.

    Args:
        loop: The event loop the connection lives in.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._transport: asyncio.Transport | None = None
        self._buffer = bytearray()
        self._waiter: asyncio.Future[None] | None = None
        self._paused = False
        self.closed = False
        self.idle_since = 0.0

    # --- asyncio.Protocol ------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        if len(self._buffer) > _HIGH_WATER and not self._paused:
            assert self._transport is not None
            self._transport.pause_reading()
            self._paused = True
        self._wake()

    def eof_received(self) -> bool:
        self.closed = True
        self._wake()
        return False  # close the transport

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._wake()

    # --- used by the revalidator -------------------------------------------------------

    @property
    def usable(self) -> bool:
        """Still open, with nothing unread in it (an idle connection must be silent)."""
        return not self.closed and not self._buffer and self._transport is not None

    def send(self, data: bytes) -> None:
        """Write ``data`` (buffered by the transport; a request is small)."""
        assert self._transport is not None
        self._transport.write(data)

    async def read_head(self, timeout_s: float) -> bytes:
        """Wait for a complete response head and return it (the body stays buffered).

        Args:
            timeout_s: Longest wait for each piece of the head.

        Returns:
            The bytes before the blank line; bare-LF heads are returned whole, with
            their ``\\n\\n``, for :func:`parse_head` to refuse.

        Raises:
            NoAnswerError: The connection closed before any byte arrived.
            httpx.RemoteProtocolError: It closed within the head, or the head is too long.
            httpx.ReadTimeout: Nothing arrived for ``timeout_s``.
        """
        searched = 0
        while True:
            end = self._buffer.find(b"\r\n\r\n", max(0, searched - 3))
            if end >= 0:
                head = bytes(self._buffer[:end])
                del self._buffer[: end + 4]
                return head
            bare = self._buffer.find(b"\n\n", max(0, searched - 1))
            if bare >= 0:
                return bytes(self._buffer[: bare + 2])
            if len(self._buffer) > MAX_HEAD_BYTES:
                raise httpx.RemoteProtocolError(f"response head over {MAX_HEAD_BYTES} bytes")
            if self.closed:
                if not self._buffer:
                    raise NoAnswerError
                raise httpx.RemoteProtocolError("server closed the connection within the head")
            searched = len(self._buffer)
            await self._wait(timeout_s)

    async def read_body(self, most: int, timeout_s: float) -> bytes:
        """Up to ``most`` body bytes, waiting for some if none are buffered.

        Raises:
            httpx.RemoteProtocolError: The connection closed first.
            httpx.ReadTimeout: Nothing arrived for ``timeout_s``.
        """
        while not self._buffer:
            if self.closed:
                raise httpx.RemoteProtocolError(
                    "peer closed connection without sending complete message body"
                )
            await self._wait(timeout_s)
        chunk = bytes(self._buffer[:most])
        del self._buffer[:most]
        if self._paused and len(self._buffer) <= _HIGH_WATER // 2:
            assert self._transport is not None
            self._transport.resume_reading()
            self._paused = False
        return chunk

    def buffered(self) -> int:
        """Bytes received and not yet read."""
        return len(self._buffer)

    def discard(self, count: int) -> None:
        """Drop ``count`` buffered bytes (the end of a body nobody reads)."""
        del self._buffer[:count]

    def close(self) -> None:
        """Close the connection now (idempotent).

        Aborted rather than closed gracefully: nothing is left to send on a connection
        given up, and a TLS connection's graceful close waits for the server's reply,
        which a closing event loop would never see (its socket would be left open).
        """
        self.closed = True
        if self._transport is not None:
            self._transport.abort()

    async def _wait(self, timeout_s: float) -> None:
        # A timer on the waiter, not asyncio.timeout(): that costs twice as much, and
        # every conditional request waits once.
        waiter = self._waiter = self._loop.create_future()
        timer = self._loop.call_later(timeout_s, _expire, waiter)
        try:
            await waiter
        finally:
            timer.cancel()
            self._waiter = None

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)


def _expire(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_exception(httpx.ReadTimeout("timed out waiting for the server"))


async def open_connection(
    host: str,
    port: int,
    *,
    tls: ssl.SSLContext | None,
    server_name: str | None,
    timeout_s: float,
) -> Connection:
    """Connect (and for TLS, handshake and verify) within ``timeout_s``.

    Args:
        host: The IP address to connect to (checked by the address guard).
        port: The port.
        tls: The context to verify the server with; None for plain HTTP.
        server_name: Name to send as SNI and verify the certificate for; None: ``host``.
        timeout_s: Longest time for the connection and the handshake together.

    Raises:
        httpx.ConnectTimeout: Not connected in time.
        httpx.ConnectError: Refused, unreachable, or the TLS handshake failed.
    """
    loop = asyncio.get_running_loop()
    try:
        async with asyncio.timeout(timeout_s):
            _transport, connection = await loop.create_connection(
                lambda: Connection(loop),
                host,
                port,
                ssl=tls,
                server_hostname=(server_name or host) if tls is not None else None,
            )
    except TimeoutError:
        raise httpx.ConnectTimeout(f"connecting to {host} port {port} timed out") from None
    except OSError as exc:  # refused, unreachable, ssl.SSLError (certificate, handshake)
        raise httpx.ConnectError(str(exc) or type(exc).__name__) from None
    return connection
