"""The limits the network clients work within, and which failures they retry.

The downloader bounds its work three ways: a :class:`Budget` of connection time
per URL (all attempts and redirects together), :class:`Slots` bounding DNS
lookups and requests overall and per server address (:func:`server_key`, so
that every spelling of one address is one server), and :func:`is_transient`,
the retry policy it shares with :class:`~cartag.net.post.GuardedPoster`.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
from collections.abc import AsyncIterator

import httpx

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


def server_key(pinned: httpx.URL) -> str:
    """The address a pinned URL connects to, in one canonical spelling."""
    host = pinned.host
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return host.lower()  # not reached: pin_target always yields an address
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return str(address.ipv4_mapped)
    return str(address)


class HostLimiter:
    """A semaphore per host, created on demand and dropped when nobody uses it."""

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._slots: dict[str, tuple[asyncio.Semaphore, list[int]]] = {}

    @contextlib.asynccontextmanager
    async def hold(self, host: str) -> AsyncIterator[None]:
        """Hold one of ``host``'s slots for the duration of the ``async with`` block."""
        if host not in self._slots:
            self._slots[host] = (asyncio.Semaphore(self._limit), [0])
        semaphore, users = self._slots[host]
        users[0] += 1
        try:
            async with semaphore:
                yield
        finally:
            users[0] -= 1
            if users[0] == 0:
                del self._slots[host]


def is_transient(exc: FetchError) -> bool:
    """Whether a failed attempt is worth another: a 5xx answer, a timeout or a connection error."""
    if isinstance(exc, HTTPStatusError):
        return exc.status >= 500
    return exc.reason in ("timeout", "connection_error")
