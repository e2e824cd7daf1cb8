"""The limits the network clients work within, and which failures they retry.

The downloader bounds its work three ways: a :class:`Budget` of connection time
per URL (all attempts and redirects together), :class:`Slots` bounding DNS
lookups and requests overall and per server address (:func:`server_key`, so
that every spelling of one address is one server), and :func:`is_transient`,
the retry policy it shares with :class:`~cartag.net.post.GuardedPoster`.
"""

from __future__ import annotations

import asyncio
import functools
import ipaddress

from cartag.errors import FetchError, HTTPStatusError


class Budget:
    """Connection time left to one URL, over all its attempts and redirects (seconds)."""

    def __init__(self, seconds: float) -> None:
        self.left = seconds

    def spend(self, seconds: float) -> None:
        """Take ``seconds`` off what is left."""
        self.left -= seconds


class Slots:
    """Concurrency limits of one kind of request: DNS lookups, overall and per server."""

    def __init__(self, overall: int, per_server: int) -> None:
        self.resolving = asyncio.Semaphore(overall)
        self.overall = asyncio.Semaphore(overall)
        self.hosts = HostLimiter(per_server)


@functools.lru_cache(maxsize=4096)
def server_key(host: str) -> str:
    """The address a request connects to (as pinned), in one canonical spelling.

    Args:
        host: An IP address (without brackets), as the address guard pinned it.
    """
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return host.lower()  # not reached: the guard always pins an address
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return str(address.ipv4_mapped)
    return str(address)


class HostLimiter:
    """A semaphore per host, created on demand and dropped when nobody uses it."""

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._slots: dict[str, tuple[asyncio.Semaphore, list[int]]] = {}

    def hold(self, host: str) -> _Hold:
        """Hold one of ``host``'s slots for the duration of the ``async with`` block."""
        return _Hold(self, host)

    def _enter(self, host: str) -> asyncio.Semaphore:
        if host not in self._slots:
            self._slots[host] = (asyncio.Semaphore(self._limit), [0])
        semaphore, users = self._slots[host]
        users[0] += 1
        return semaphore

    def _leave(self, host: str) -> None:
        users = self._slots[host][1]
        users[0] -= 1
        if users[0] == 0:
            del self._slots[host]


class _Hold:
    """One slot of a host, as an async context manager (a class: every request takes
    one, and a generator-based context manager cost several times more)."""

    __slots__ = ("_host", "_limiter", "_semaphore")

    def __init__(self, limiter: HostLimiter, host: str) -> None:
        self._limiter = limiter
        self._host = host
        self._semaphore: asyncio.Semaphore | None = None

    async def __aenter__(self) -> None:
        semaphore = self._limiter._enter(self._host)
        try:
            await semaphore.acquire()
        except BaseException:
            self._limiter._leave(self._host)
            raise
        self._semaphore = semaphore

    async def __aexit__(self, *exc_info: object) -> None:
        assert self._semaphore is not None
        self._semaphore.release()
        self._limiter._leave(self._host)


def is_transient(exc: FetchError) -> bool:
    """Whether a failed attempt is worth another: a 5xx answer, a timeout or a connection error."""
    if isinstance(exc, HTTPStatusError):
        return exc.status >= 500
    return exc.reason in ("timeout", "connection_error")
