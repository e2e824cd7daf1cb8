"""The download layer: fetch image bytes by URL, safely and politely.

:class:`Fetcher` turns :class:`~cartag.net.outcomes.FetchRequest` objects into
outcomes; a bad URL never raises, it becomes a :class:`~cartag.net.outcomes.Failed`
whose ``reason`` is one of those listed in :mod:`cartag.net.outcomes`.

Safety: every hop is resolved once, every resolved address is checked by
:func:`~cartag.net.guard.check_ip`, and the request is sent to the checked
address (URL host rewritten to the IP, original ``Host`` header, TLS server name
via the ``sni_hostname`` extension), so DNS rebinding cannot redirect it.
Concurrency is bounded overall and per server address (the address a host name
resolves to, so that ``127.0.0.2``, ``2130706434`` and ``127.2`` are one server).
Conditional requests (revalidating a cached image) have slots of their own, so
that slow full downloads never hold up the answers for cached images. Both go
over the lean keep-alive connections of :class:`~cartag.net.revalidate.Revalidator`
where it can read the answer (a 304 through httpx cost more CPU than the rest of
a cached answer, a download about a millisecond more), else through httpx. 5xx
answers, timeouts and connection errors are retried with exponential backoff,
nothing else is, and not a timeout on a body that had started arriving: a
server that trickles its body would only trickle it again. Each URL gets
``download_deadline_s`` of connection time in all; time spent waiting for a
free slot is not counted. A Fetcher owns an ``httpx.AsyncClient`` and a
Revalidator: create it, use it and close it within one event loop.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Awaitable, Callable, Mapping, Sequence
from http.cookiejar import CookieJar, DefaultCookiePolicy
from typing import Any, TypeVar

import httpx

from cartag.errors import FetchError, FetchTimeoutError
from cartag.net.answers import Redirect, read_answer, translate
from cartag.net.guard import (
    Resolver,
    SystemResolver,
    Target,
    parse_target,
    pin_address,
    pin_target,
    pinned_request,
)
from cartag.net.limits import Budget, Slots, is_transient, server_key
from cartag.net.lookups import SharedLookups
from cartag.net.outcomes import Failed, Fetched, FetchOutcome, FetchRequest, NotModified
from cartag.net.revalidate import Answer, Revalidator
from cartag.net.transport import SniPoolTransport
from cartag.settings import Settings

_T = TypeVar("_T")

# A server trickling a byte just within each read timeout would hold a slot
# forever, so an attempt gets connect_timeout_s + this many read timeouts in all.
_ATTEMPT_READ_TIMEOUTS = 4


class Fetcher:
    """Downloads URLs with the limits and guards of :class:`~cartag.settings.Settings`.

    Args:
        settings: Timeouts, limits, retry policy, allow-list and User-Agent.
        transport: Replaces the network (tests); the Fetcher closes it in :meth:`aclose`.
            With a transport, every request goes through it, unless a
            ``revalidator`` is given as well.
        resolver: Name resolution; defaults to :class:`SystemResolver`. Concurrent
            lookups of one name share one call (:class:`SharedLookups`).
        revalidator: Sends the image GETs it can read; default: a :class:`Revalidator`
            (without a ``transport``), which the Fetcher closes in :meth:`aclose`.

    Attributes:
        bytes_downloaded: Body bytes received so far, over all requests.
    """

    def __init__(
        self,
        settings: Settings,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        resolver: Resolver | None = None,
        revalidator: Revalidator | None = None,
    ) -> None:
        self._settings = settings
        # Requests to one host resolving at the same time share the lookup.
        self._resolver = SharedLookups(resolver or SystemResolver())
        self._allowed = list(settings.allowed_networks)
        # Full downloads, and conditional requests (mostly bodyless 304s) apart.
        self._downloads = Slots(settings.download_concurrency, settings.per_host_concurrency)
        self._revalidations = Slots(
            settings.download_concurrency, settings.revalidate_per_host_concurrency
        )
        connect, read = settings.connect_timeout_s, settings.read_timeout_s
        self._deadline = connect + _ATTEMPT_READ_TIMEOUTS * read
        if revalidator is None and transport is None:
            revalidator = Revalidator(settings)
        self._revalidator = revalidator
        if transport is None:
            n = settings.download_concurrency
            transport = SniPoolTransport(
                limits=httpx.Limits(max_connections=n, max_keepalive_connections=n)
            )
        self._client = httpx.AsyncClient(
            transport=transport,
            follow_redirects=False,
            # Proxies from the environment would resolve names themselves and
            # defeat the address check, so the environment is ignored.
            trust_env=False,
            timeout=httpx.Timeout(read, connect=connect, pool=connect),  # read also for writes
            headers={
                "User-Agent": settings.user_agent,
                "Accept": "image/*,*/*;q=0.5",
                # A compressed body could expand far past the size limit in one chunk.
                "Accept-Encoding": "identity",
            },
            # Requests go to IP addresses, so a cookie set by one site would be
            # sent to every other site on the same IP: keep none.
            cookies=CookieJar(DefaultCookiePolicy(allowed_domains=[])),
        )
        self.bytes_downloaded = 0

    async def __aenter__(self) -> Fetcher:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the connections (and the transport)."""
        if self._revalidator is not None:
            await self._revalidator.aclose()
        await self._client.aclose()

    async def fetch_many(self, requests: Sequence[FetchRequest]) -> list[FetchOutcome]:
        """Fetch all requests concurrently (within the limits).

        Args:
            requests: What to fetch. Callers pass batches (one task per request).

        Returns:
            One outcome per request, in the same order.
        """
        async with asyncio.TaskGroup() as group:
            tasks = [group.create_task(self.fetch(request)) for request in requests]
        return [task.result() for task in tasks]

    async def fetch(self, request: FetchRequest) -> FetchOutcome:
        """Download one URL, following redirects and retrying transient failures.

        Args:
            request: The URL, with the validators of a copy we have, if any:
                they are sent as ``If-None-Match`` / ``If-Modified-Since``.

        Returns:
            :class:`Fetched`, :class:`NotModified` on 304, or :class:`Failed`;
            problems with the URL or the server never raise.
        """
        try:
            return await self._fetch(request)
        except FetchError as exc:
            return Failed(url=request.url, reason=exc.reason, message=exc.message)

    async def post_json(self, url: str, payload: dict[str, Any]) -> int:
        """POST ``payload`` as JSON (job callbacks), under the same address guard.

        One attempt, no redirects followed, timeouts from ``callback_timeout_s``;
        retrying is the caller's decision.

        Returns:
            The HTTP status of the answer, whatever it is.

        Raises:
            FetchError: With reason ``invalid_url``, ``dns_error``,
                ``blocked_address``, ``timeout`` or ``connection_error``.
        """
        timeout = self._settings.callback_timeout_s
        target = parse_target(url)
        return await self._exchange(
            "POST", target, 0, 2 * timeout, _status, json=payload, timeout=httpx.Timeout(timeout)
        )

    async def post_body(self, url: str, content: bytes, headers: Mapping[str, str]) -> int:
        """POST ``content`` as is (signed job callbacks), like :meth:`post_json`.

        Args:
            url: An absolute http(s) URL.
            content: The exact bytes to send (a signature covers them).
            headers: ``Content-Type`` and any others (signature, timestamp).

        Returns:
            The HTTP status of the answer, whatever it is (a 3xx is not followed).

        Raises:
            FetchError: As :meth:`post_json`.
        """
        timeout = self._settings.callback_timeout_s
        target = parse_target(url)
        return await self._exchange(
            "POST",
            target,
            0,
            2 * timeout,
            _status,
            content=content,
            headers=dict(headers),
            timeout=httpx.Timeout(timeout),
        )

    async def check_address(self, url: str) -> None:
        """Check ``url`` with the address guard now, without sending anything.

        A job's callback URL is checked when the job is submitted, so a forbidden one
        is refused at once instead of failing when the job is done.

        Raises:
            FetchError: ``invalid_url``, ``dns_error`` or ``blocked_address``.
        """
        await pin_target(
            parse_target(url),
            0,
            self._resolver,
            self._allowed,
            dns_timeout_s=self._settings.connect_timeout_s,
        )

    async def _fetch(self, request: FetchRequest) -> FetchOutcome:
        target = parse_target(request.url)
        validators = {"If-None-Match": request.etag, "If-Modified-Since": request.last_modified}
        # A validator httpx cannot send (non-ASCII, line breaks) would crash the
        # request; without it the download is merely unconditional.
        conditional = {k: v for k, v in validators.items() if v and v.isprintable() and v.isascii()}
        budget = Budget(self._settings.download_deadline_s)
        slots = self._revalidations if conditional else self._downloads
        for _hop in range(self._settings.max_redirects + 1):
            get = functools.partial(self._get, request.url, target, conditional, slots, budget)
            result = await self._retrying(get, budget)
            if not isinstance(result, Redirect):
                return result
            target = parse_target(result.location)
        raise FetchError(
            f"more than {self._settings.max_redirects} redirects", "too_many_redirects"
        )

    async def _retrying(self, attempt: Callable[[int], Awaitable[_T]], budget: Budget) -> _T:
        number = 0
        while True:
            try:
                return await attempt(number)
            except FetchError as exc:
                backoff = self._settings.retry_backoff_s * 2**number
                if (
                    number >= self._settings.retries
                    or isinstance(exc, _SlowBodyError)
                    or not is_transient(exc)
                    or budget.left <= backoff
                ):
                    raise
            await asyncio.sleep(backoff)
            budget.spend(backoff)
            number += 1

    async def _get(
        self,
        url: str,
        target: Target,
        conditional: dict[str, str],
        slots: Slots,
        budget: Budget,
        attempt: int,
    ) -> Fetched | NotModified | Redirect:
        answered = False

        async def read(response: Answer) -> Fetched | NotModified | Redirect:
            nonlocal answered
            answered = True
            limit = self._settings.max_image_bytes
            return await read_answer(url, target, response, limit, self._received)

        try:
            return await self._exchange(
                "GET",
                target,
                attempt,
                self._deadline,
                read,
                headers=conditional,
                slots=slots,
                budget=budget,
                lean=True,
            )
        except FetchTimeoutError as exc:
            if not answered:
                raise
            raise _SlowBodyError(exc.message) from None

    async def _exchange(
        self,
        method: str,
        target: Target,
        attempt: int,
        deadline: float,
        read: Callable[[Answer], Awaitable[_T]],
        *,
        slots: Slots | None = None,
        budget: Budget | None = None,
        lean: bool = False,
        **kwargs: Any,
    ) -> _T:
        """Send one pinned request within the limits and read its answer with ``read``.

        Args:
            method: HTTP method.
            target: Where to send it.
            attempt: Number of the attempt (picks one of the host's addresses).
            deadline: Most seconds this exchange may take, connect to last byte.
            read: Reads the answer (its body streams in); what it returns is returned.
            slots: The concurrency limits to hold; default: those of full downloads.
            budget: The URL's remaining connection time; the exchange spends from it.
            lean: An image GET: the revalidator sends it, if there is one and it
                can read the answer (else httpx does).
            **kwargs: Passed to ``httpx.AsyncClient.stream`` (``headers`` merged).
        """
        slots = slots or self._downloads
        # Resolved before the connection slots are taken: the per-server limit
        # keys on the address, however the URL spells the host. Lookups have a
        # bound of their own, so that a large batch does not queue a thousand of
        # them in the resolver's threads (each would count its wait as DNS time).
        async with slots.resolving:
            address = await pin_address(
                target,
                attempt,
                self._resolver,
                self._allowed,
                dns_timeout_s=self._settings.connect_timeout_s,
            )
        extra = kwargs.pop("headers", {})
        # Per-server first: waiting for a busy server must not hold a global slot.
        async with slots.hosts.hold(server_key(address)), slots.overall:
            if budget is not None:
                if budget.left <= 0:
                    raise FetchTimeoutError(f"{target.url}: download_deadline_s used up")
                deadline = min(deadline, budget.left)
            loop = asyncio.get_running_loop()
            started = loop.time()
            try:
                async with asyncio.timeout(deadline):
                    if lean and self._revalidator is not None:
                        answer = await self._revalidator.send(target, address, extra)
                        if answer is not None:
                            try:
                                return await read(answer)
                            finally:
                                await answer.aclose()
                    pinned, headers, extensions = pinned_request(target, address)
                    headers.update(extra)
                    async with self._client.stream(
                        method, pinned, headers=headers, extensions=extensions, **kwargs
                    ) as response:
                        return await read(response)
            except (TimeoutError, httpx.TransportError) as exc:
                raise translate(target, exc) from None
            finally:
                if budget is not None:
                    budget.spend(loop.time() - started)

    def _received(self, size: int) -> None:
        self.bytes_downloaded += size


async def _status(response: Answer) -> int:
    return response.status_code


class _SlowBodyError(FetchTimeoutError):
    """The server answered, then sent its body too slowly: not worth another attempt."""
