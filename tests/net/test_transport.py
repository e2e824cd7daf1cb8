"""SniPoolTransport: one connection pool per TLS server name, idle pools closed first.

TLS verification per name through a real Fetcher is shown in ``tests/net/test_guard.py``.
"""

from __future__ import annotations

import asyncio

import httpx

from cartag.net.transport import SniPoolTransport


class _RecordingPool(httpx.MockTransport):
    """A fake connection pool: answers 200 and remembers requests and closing."""

    def __init__(self) -> None:
        super().__init__(self._answer)
        self.seen: list[str] = []
        self.closed = False

    def _answer(self, request: httpx.Request) -> httpx.Response:
        self.seen.append(str(request.url))
        return httpx.Response(200, content=b"ok")

    async def aclose(self) -> None:
        self.closed = True


def _request(sni: str | None) -> httpx.Request:
    extensions = {"sni_hostname": sni} if sni else {}
    scheme = "https" if sni else "http"
    return httpx.Request("GET", f"{scheme}://93.184.216.34/x", extensions=extensions)


def test_sni_pool_transport_keeps_one_pool_per_server_name() -> None:
    pools: list[_RecordingPool] = []

    def factory() -> httpx.AsyncBaseTransport:
        pools.append(_RecordingPool())
        return pools[-1]

    async def scenario() -> list[str]:
        transport = SniPoolTransport(factory=factory)
        for sni in ["a.example", "b.example", "a.example", None, None]:
            response = await transport.handle_async_request(_request(sni))
            await response.aread()
            await response.aclose()
        names = transport.pool_names
        await transport.aclose()
        return names

    names = asyncio.run(scenario())
    assert sorted(names) == ["", "a.example", "b.example"]
    assert [len(pool.seen) for pool in pools] == [2, 1, 2]
    assert all(pool.closed for pool in pools)


def test_sni_pool_transport_closes_idle_pools_but_never_busy_ones() -> None:
    pools: dict[int, _RecordingPool] = {}

    def factory() -> httpx.AsyncBaseTransport:
        pools[len(pools)] = _RecordingPool()
        return pools[len(pools) - 1]

    async def scenario() -> None:
        transport = SniPoolTransport(factory=factory, max_pools=1)
        busy = await transport.handle_async_request(_request("busy.example"))
        idle = await transport.handle_async_request(_request("idle.example"))
        await idle.aclose()
        assert not pools[0].closed  # still streaming a body
        last = await transport.handle_async_request(_request("last.example"))
        await last.aclose()
        assert pools[1].closed  # idle and least recently used
        assert transport.pool_names == ["busy.example", "last.example"]
        await busy.aclose()
        await transport.aclose()

    asyncio.run(scenario())
