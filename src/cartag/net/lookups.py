"""Concurrent lookups of one host name share one answer.

Every request resolves its host (the address guard then checks what it gets and pins
the request to it), and an inventory's images mostly live on one or two hosts: a
re-run's thousand conditional requests meant a thousand ``getaddrinfo`` calls in the
resolver's threads, each costing more CPU than the lean request itself. With
:class:`SharedLookups`, a request that asks while a lookup of the same name is under
way waits for that lookup instead of starting another. Nothing is kept once the
answer has arrived, so no request gets an answer older than a lookup in flight: DNS
changes are seen as soon as before, and every address is still checked per request.
"""

from __future__ import annotations

import asyncio

from cartag.net.guard import Resolver


class SharedLookups(Resolver):
    """Wraps a resolver so that concurrent lookups of one name and port make one call.

    Args:
        inner: The resolver that does the lookups.
    """

    def __init__(self, inner: Resolver) -> None:
        self._inner = inner
        self._pending: dict[tuple[str, int], asyncio.Future[list[str]]] = {}

    async def resolve(self, host: str, port: int) -> list[str]:
        key = (host, port)
        lookup = self._pending.get(key)
        if lookup is None:
            lookup = asyncio.ensure_future(self._inner.resolve(host, port))
            self._pending[key] = lookup
            lookup.add_done_callback(lambda done: self._finished(key, done))
        # Shielded: one request giving up (its DNS timeout) must not cancel the lookup
        # that others wait for. A copy each: the list is the caller's.
        return list(await asyncio.shield(lookup))

    def _finished(self, key: tuple[str, int], lookup: asyncio.Future[list[str]]) -> None:
        if self._pending.get(key) is lookup:
            del self._pending[key]
        if not lookup.cancelled():
            lookup.exception()  # retrieved: waiters that gave up must not leave it unread
