"""The lean path for image GETs: revalidations and downloads without httpx's cost.

A re-run of an unchanged inventory is a thousand conditional GETs answered 304,
and through httpx each one cost about a millisecond of CPU (client, pool, h11),
more than everything else the re-run does; a first run pays about as much per full
download. :class:`Revalidator` sends both over a small keep-alive pool of
:class:`~cartag.net.http1.Connection` objects instead.

It changes nothing of what is asked or checked: the :class:`~cartag.net.fetch.Fetcher`
still resolves and checks every address (the request goes to the pinned address,
with the real ``Host`` and, for https, the real name as SNI, verified with the same
SSL context as the full client), holds the same slots and applies the same timeouts,
deadline and retry policy. Connections are pooled by (scheme, address, port, server
name), so a TLS connection verified for one name never serves another.

What comes back:

* a 304 or 204, or any answer whose body is framed by ``Content-Length``, is read
  here (up to the caller's limit; a 200 with the new image included), and the
  connection is kept unless the server said ``Connection: close``;
* an answer without a length (chunked, or ended by closing) is read here only when
  its body does not matter (redirects, errors: the connection is then closed);
  for a 2xx, :meth:`Revalidator.send` returns None and the fetcher asks httpx again
  (and later unconditional requests to that server go to httpx directly: its images
  would come unframed again, and each would be asked for twice);
* anything it cannot parse exactly (1xx, bare line feeds, non-ASCII heads) returns
  None as well: the full client's answer is the one today's tests describe;
* a URL with a user and password is never sent here: httpx sends them as Basic auth.

A kept connection that fails before any byte of the answer (the server closed it
while it was idle) is retried once on a new connection.
"""

from __future__ import annotations

import asyncio
import re
import ssl
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Protocol

from cartag.net.guard import Target, is_ip_literal
from cartag.net.http1 import Connection, Head, NoAnswerError, open_connection, parse_head
from cartag.net.transport import default_ssl_context
from cartag.settings import Settings

# Idle connections older than this are not reused (httpx's default keep-alive expiry).
KEEPALIVE_S = 5.0
# Pools kept (one per scheme, address, port and server name), least recently used closed.
_MAX_POOLS = 64
# Servers remembered as sending 2xx bodies without a length (least recently seen forgotten).
_MAX_UNFRAMED = 1024
_TARGET = re.compile(rb"/[\x21-\x7e]*")
_VALUE = re.compile(r"[\x20-\x7e]*")
_BODYLESS = frozenset({204, 304})

_Key = tuple[str, str, int, str]


class Answer(Protocol):
    """What the fetcher reads of an answer: an ``httpx.Response`` or a :class:`LeanResponse`."""

    @property
    def status_code(self) -> int: ...

    @property
    def headers(self) -> Mapping[str, str]: ...

    def aiter_bytes(self) -> AsyncIterator[bytes]: ...


class LeanResponse:
    """An answer read over a pooled connection; its body is read on demand.

    Attributes:
        status_code: The HTTP status.
        headers: Header fields by lower-case name (repeated fields joined by ``", "``).
    """

    def __init__(
        self,
        head: Head,
        connection: Connection,
        length: int | None,
        keep: bool,
        release: Callable[[Connection], None],
        read_timeout_s: float,
    ) -> None:
        self.status_code = head.status
        self.headers: dict[str, str] = {}
        for name, value in head.fields:
            known = self.headers.get(name)
            self.headers[name] = value if known is None else f"{known}, {value}"
        self._connection: Connection | None = connection
        self._left = length  # None: unknown, never read
        self._keep = keep and length is not None
        self._release = release
        self._read_timeout_s = read_timeout_s

    async def aiter_bytes(self) -> AsyncIterator[bytes]:
        """The body, in the pieces it arrives in (nothing if its length is unknown)."""
        while self._left and self._connection is not None:
            chunk = await self._connection.read_body(self._left, self._read_timeout_s)
            self._left -= len(chunk)
            yield chunk

    async def aclose(self) -> None:
        """Give the connection back when the whole body was read, else close it."""
        connection, self._connection = self._connection, None
        if connection is None:
            return
        left = self._left
        # The rest of a short body (an error page) may be here already: drop it, keep
        # the connection.
        if left and connection.buffered() >= left:
            connection.discard(left)
            left = 0
        if self._keep and left == 0 and connection.usable:
            self._release(connection)
        else:
            connection.close()


class Revalidator:
    """Sends conditional GETs over a keep-alive pool of lean connections.

    Args:
        settings: Timeouts, User-Agent, and ``revalidate_per_host_concurrency`` (the
            idle connections kept per pool).
        ssl_context: Verifies https servers; default: the full client's context.
        keepalive_s: Idle connections older than this are closed, not reused.
    """

    def __init__(
        self,
        settings: Settings,
        *,
        ssl_context: ssl.SSLContext | None = None,
        keepalive_s: float = KEEPALIVE_S,
    ) -> None:
        self._ssl = ssl_context
        self._keepalive_s = keepalive_s
        self._connect_timeout_s = settings.connect_timeout_s
        self._read_timeout_s = settings.read_timeout_s
        self._max_idle = settings.revalidate_per_host_concurrency
        self._idle: OrderedDict[_Key, list[Connection]] = OrderedDict()
        # Servers whose 2xx came without a length: their downloads go to the full client.
        self._unframed: OrderedDict[_Key, None] = OrderedDict()
        fixed = {
            "Accept": "image/*,*/*;q=0.5",
            "Accept-Encoding": "identity",  # as the full client: no compressed bodies
            "User-Agent": settings.user_agent,
        }
        # A User-Agent that cannot be sent as is leaves every request to the full client.
        self._fixed = _header_block(fixed)
        self.connections_opened = 0

    async def send(
        self, target: Target, address: str, headers: Mapping[str, str]
    ) -> LeanResponse | None:
        """Send ``GET target`` to ``address`` and read the answer's head.

        Args:
            target: The URL as given: its path, ``Host``, and for https the name
                to verify (its address, if the URL has one instead of a name).
            address: Where to connect: the address the guard checked for it.
            headers: More header fields (the validators; none for a full download).

        Returns:
            The answer (close it), or None when the full client must ask instead:
            nothing was sent then, or the request must be sent again.

        Raises:
            httpx.TransportError: Connecting or reading failed or timed out.
        """
        request = self._request(target, headers)
        if request is None or "%" in address:  # a zone: the full client refuses it
            return None
        if target.credentials:
            return None  # a user and password: the full client sends them (Basic auth)
        scheme = target.scheme
        name = target.host if scheme == "https" and not is_ip_literal(target.host) else ""
        key = (scheme, address, target.port, name)
        if not headers and key in self._unframed:
            self._unframed.move_to_end(key)
            return None
        connection, reused = self._take(key), True
        while True:
            if connection is None:
                connection, reused = await self._open(key), False
            try:
                connection.send(request)
                head = await connection.read_head(self._read_timeout_s)
            except NoAnswerError:
                connection.close()
                if not reused:
                    raise
                connection = None  # it had been closed while idle: once more, on a new one
                continue
            except BaseException:
                connection.close()
                raise
            return self._answer(key, connection, head)

    async def aclose(self) -> None:
        """Close the idle connections (those in use close with their answers)."""
        pools, self._idle = list(self._idle.values()), OrderedDict()
        for pool in pools:
            for connection in pool:
                connection.close()

    def _answer(self, key: _Key, connection: Connection, raw: bytes) -> LeanResponse | None:
        head = parse_head(raw)
        if head is None or head.status < 200:
            connection.close()
            return None
        names = [name for name, _ in head.fields]
        length: int | None = None
        if head.status in _BODYLESS:
            length = 0
        elif "transfer-encoding" not in names and names.count("content-length") == 1:
            value = dict(head.fields)["content-length"]
            length = int(value) if value.isdigit() else None
        if length is None and 200 <= head.status < 300:
            connection.close()  # a body without a length: the full client reads those
            self._unframed[key] = None
            self._unframed.move_to_end(key)
            while len(self._unframed) > _MAX_UNFRAMED:
                self._unframed.popitem(last=False)
            return None
        tokens = {
            t.strip().lower() for n, v in head.fields if n == "connection" for t in v.split(",")
        }
        keep = head.http11 and "close" not in tokens
        return LeanResponse(
            head,
            connection,
            length,
            keep,
            lambda done: self._put(key, done),
            self._read_timeout_s,
        )

    def _request(self, target: Target, headers: Mapping[str, str]) -> bytes | None:
        path = target.path
        block = _header_block({"Host": target.netloc, **headers})
        if self._fixed is None or block is None or _TARGET.fullmatch(path) is None:
            return None
        return b"GET " + path + b" HTTP/1.1\r\n" + block + self._fixed + b"\r\n"

    def _take(self, key: _Key) -> Connection | None:
        pool = self._idle.get(key)
        now = asyncio.get_running_loop().time()
        while pool:
            connection = pool.pop()
            if connection.usable and now - connection.idle_since < self._keepalive_s:
                return connection
            connection.close()
        return None

    async def _open(self, key: _Key) -> Connection:
        scheme, host, port, name = key
        tls = None
        if scheme == "https":
            tls = self._ssl or default_ssl_context()
        connection = await open_connection(
            host, port, tls=tls, server_name=name or None, timeout_s=self._connect_timeout_s
        )
        self.connections_opened += 1
        return connection

    def _put(self, key: _Key, connection: Connection) -> None:
        pool = self._idle.setdefault(key, [])
        self._idle.move_to_end(key)
        if len(pool) >= self._max_idle:
            connection.close()
            return
        connection.idle_since = asyncio.get_running_loop().time()
        pool.append(connection)
        while len(self._idle) > _MAX_POOLS:
            _, oldest = self._idle.popitem(last=False)
            for idle in oldest:
                idle.close()


def _header_block(fields: Mapping[str, str]) -> bytes | None:
    """``Name: value CRLF`` lines, or None if a value holds anything but printable ASCII."""
    lines = []
    for name, value in fields.items():
        if _VALUE.fullmatch(value) is None:
            return None
        lines.append(f"{name}: {value}\r\n")
    return "".join(lines).encode("ascii")
