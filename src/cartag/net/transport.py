"""An httpx transport that keeps TLS verification per host name once requests are pinned.

The fetcher and the guarded poster send each request to the IP address the
address guard (:mod:`cartag.net.guard`) checked, with the real name in the
``Host`` header and the TLS ``sni_hostname`` extension. httpx pools
connections by address, so :class:`SniPoolTransport` keeps one pool per
server name: a TLS connection verified for one name is never reused for another.
"""

from __future__ import annotations

import functools
import ssl
from collections import Counter, OrderedDict
from collections.abc import AsyncIterator, Callable

import httpx


class SniPoolTransport(httpx.AsyncBaseTransport):
    """An httpx transport with one connection pool per TLS server name.

    Requests pinned to an IP address are pooled by httpx under (scheme, IP,
    port). Sharing one pool, a TLS connection verified for ``a.example`` would
    be reused for ``b.example`` on the same CDN address: b's certificate would
    never be checked, and many CDNs answer 421 to the mismatch. So each
    ``sni_hostname`` gets its own pool; plain HTTP shares one (there only the
    ``Host`` header matters). Idle pools beyond ``max_pools`` are closed,
    least recently used first.

    Args:
        limits: Connection limits of each pool.
        max_pools: Pools kept before idle ones are closed.
        factory: Makes a pool (tests); default ``httpx.AsyncHTTPTransport``.
    """

    def __init__(
        self,
        *,
        limits: httpx.Limits | None = None,
        max_pools: int = 64,
        factory: Callable[[], httpx.AsyncBaseTransport] | None = None,
    ) -> None:
        self._limits = limits or httpx.Limits()
        self._max_pools = max_pools
        self._factory = factory or self._default_pool
        self._pools: OrderedDict[str, httpx.AsyncBaseTransport] = OrderedDict()
        self._busy: Counter[str] = Counter()

    @property
    def pool_names(self) -> list[str]:
        """Server names with an open pool, least recently used first (``""``: plain HTTP)."""
        return list(self._pools)

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        name = request.extensions.get("sni_hostname") or ""
        key = name.decode("ascii") if isinstance(name, bytes) else str(name)
        created = key not in self._pools
        if created:
            self._pools[key] = self._factory()
        pool = self._pools[key]
        self._pools.move_to_end(key)
        # Counted as busy before any await, so a concurrent eviction spares it.
        self._busy[key] += 1
        try:
            if created:
                await self._close_idle()
            response = await pool.handle_async_request(request)
        except BaseException:
            self._release(key)
            raise
        if not isinstance(response.stream, httpx.AsyncByteStream):
            self._release(key)
            raise TypeError("SniPoolTransport needs pools that return async streams")
        return httpx.Response(
            status_code=response.status_code,
            headers=response.headers,
            stream=_ReleasingStream(response.stream, lambda: self._release(key)),
            extensions=response.extensions,
        )

    async def aclose(self) -> None:
        pools = list(self._pools.values())
        self._pools.clear()
        for pool in pools:
            await pool.aclose()

    def _default_pool(self) -> httpx.AsyncBaseTransport:
        return httpx.AsyncHTTPTransport(
            verify=default_ssl_context(), trust_env=False, limits=self._limits
        )

    def _release(self, key: str) -> None:
        self._busy[key] -= 1
        if self._busy[key] <= 0:
            del self._busy[key]

    async def _close_idle(self) -> None:
        for key in list(self._pools):
            if len(self._pools) <= self._max_pools:
                return
            # Another task may have closed it while this one awaited.
            if key in self._pools and not self._busy[key]:
                await self._pools.pop(key).aclose()


class _ReleasingStream(httpx.AsyncByteStream):
    """Wraps a response body and reports when it is closed, exactly once."""

    def __init__(self, inner: httpx.AsyncByteStream, release: Callable[[], None]) -> None:
        self._inner = inner
        self._release: Callable[[], None] | None = release

    async def __aiter__(self) -> AsyncIterator[bytes]:
        async for chunk in self._inner:
            yield chunk

    async def aclose(self) -> None:
        try:
            await self._inner.aclose()
        finally:
            release, self._release = self._release, None
            if release is not None:
                release()


@functools.cache
def default_ssl_context() -> ssl.SSLContext:
    """The context that verifies https servers, for the full and the lean client alike."""
    # Loading the CA bundle takes tens of milliseconds: once per process is enough.
    return httpx.create_ssl_context(trust_env=False)
