"""Concurrent lookups of one name share one call; nothing is kept afterwards."""

from __future__ import annotations

import asyncio
from ipaddress import ip_network

import pytest

from cartag.errors import FetchError
from cartag.net.fetch import Fetcher
from cartag.net.guard import Resolver
from cartag.net.lookups import SharedLookups
from cartag.net.outcomes import FetchRequest, NotModified
from cartag.settings import Settings
from tests.support.http_server import ImageServer
from tests.support.images import jpeg_bytes


class _CountingResolver(Resolver):
    """Resolves every name to 127.0.0.1 after ``delay_s``, counting the lookups."""

    def __init__(self, delay_s: float = 0.05, fail: bool = False) -> None:
        self.calls: list[str] = []
        self.delay_s = delay_s
        self.fail = fail

    async def resolve(self, host: str, port: int) -> list[str]:
        self.calls.append(host)
        await asyncio.sleep(self.delay_s)
        if self.fail:
            raise FetchError(f"cannot resolve host {host!r}", "dns_error")
        return ["127.0.0.1"]


def test_concurrent_lookups_of_a_name_share_one_call_and_nothing_is_kept() -> None:
    inner = _CountingResolver()
    shared = SharedLookups(inner)

    async def go() -> list[list[str]]:
        first = await asyncio.gather(*(shared.resolve("a.test", 80) for _ in range(20)))
        other = await asyncio.gather(shared.resolve("b.test", 80), shared.resolve("a.test", 443))
        again = await shared.resolve("a.test", 80)  # the first lookup is over: a new one
        return [*first, *other, again]

    answers = asyncio.run(go())
    assert all(answer == ["127.0.0.1"] for answer in answers)
    assert inner.calls == ["a.test", "b.test", "a.test", "a.test"]


def test_a_failed_lookup_fails_every_waiter_once() -> None:
    inner = _CountingResolver(fail=True)
    shared = SharedLookups(inner)

    async def go() -> list[BaseException | list[str]]:
        lookups = (shared.resolve("a.test", 80) for _ in range(5))
        return await asyncio.gather(*lookups, return_exceptions=True)

    outcomes = asyncio.run(go())
    assert all(isinstance(o, FetchError) and o.reason == "dns_error" for o in outcomes)
    assert inner.calls == ["a.test"]


def test_a_waiter_that_gives_up_leaves_the_lookup_to_the_others() -> None:
    inner = _CountingResolver(delay_s=0.2, fail=True)
    shared = SharedLookups(inner)

    async def go() -> BaseException | list[str]:
        patient = asyncio.ensure_future(shared.resolve("a.test", 80))
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.05):
                await shared.resolve("a.test", 80)
        (outcome,) = await asyncio.gather(patient, return_exceptions=True)
        return outcome

    # The lookup's failure reaches the patient waiter, and is not left unread (warnings
    # are errors here) for the one that gave up.
    outcome = asyncio.run(go())
    assert isinstance(outcome, FetchError) and inner.calls == ["a.test"]


def test_a_fetcher_resolves_a_busy_host_far_less_often_than_it_asks() -> None:
    inner = _CountingResolver(delay_s=0.02)
    settings = Settings(allowed_networks=[ip_network("127.0.0.0/8")], retry_backoff_s=0.0)
    with ImageServer() as server:
        server.add_file("/a.jpg", jpeg_bytes(8, 8), etag='"v1"')
        requests = [FetchRequest(server.url("/a.jpg", host="cdn.test"), etag='"v1"')] * 100

        async def go() -> list[object]:
            async with Fetcher(settings, resolver=inner) as fetcher:
                return list(await fetcher.fetch_many(requests))

        outcomes = asyncio.run(go())
    assert all(isinstance(o, NotModified) for o in outcomes)
    assert 1 <= len(inner.calls) <= 20  # each lookup shared by the requests waiting for it
