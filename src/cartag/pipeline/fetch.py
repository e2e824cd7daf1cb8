"""The download layer: fetch image bytes by URL, safely and politely.

:class:`Fetcher` turns :class:`FetchRequest` objects into outcomes
(:class:`Fetched`, :class:`NotModified` or :class:`Failed`); a bad URL never
raises, it becomes a ``Failed`` with a machine-readable ``reason``:

* ``invalid_url``: not http(s), no or malformed host, bad port, bad redirect.
* ``dns_error``: the host name does not resolve.
* ``blocked_address``: the URL (or a redirect) points at a non-public network.
* ``connection_error``: refused, reset, TLS failure, protocol garbage.
* ``timeout``: connect or read timeout, or the attempt took too long in total.
* ``too_large``: body over ``max_image_bytes`` (declared or streamed).
* ``too_many_redirects``: more than ``max_redirects`` hops.
* ``unsupported_encoding``: server compressed the body although asked not to.
* ``http_<status>``: the final answer was not 2xx/304 (e.g. ``http_404``).

Safety: every hop is resolved once, every resolved address is checked by
:func:`~cartag.pipeline.netguard.check_ip`, and the request is sent to the checked
address (URL host rewritten to the IP, original ``Host`` header, TLS server name
via the ``sni_hostname`` extension), so DNS rebinding cannot redirect it.
Concurrency is bounded overall and per host; 5xx answers, timeouts and connection
errors are retried with exponential backoff, nothing else is.

A Fetcher owns an ``httpx.AsyncClient``: create it, use it and close it within
one event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass
from http.cookiejar import CookieJar, DefaultCookiePolicy
from typing import Any, TypeVar

import httpx

from cartag.errors import FetchError, FetchTimeoutError, HTTPStatusError, TooLargeError
from cartag.pipeline.netguard import (
    Resolver,
    SniPoolTransport,
    SystemResolver,
    Target,
    parse_target,
    pin_target,
)
from cartag.settings import Settings

_T = TypeVar("_T")

_REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
# A server trickling a byte just within each read timeout would hold a slot
# forever, so an attempt gets connect_timeout_s + this many read timeouts in all.
_ATTEMPT_READ_TIMEOUTS = 4


@dataclass(frozen=True)
class Validators:
    """Cache validators of a response, as the server sent them."""

    etag: str | None
    last_modified: str | None
    content_length: int | None


@dataclass(frozen=True)
class FetchRequest:
    """One URL to download, with the validators of a copy we may already have."""

    url: str
    etag: str | None = None
    last_modified: str | None = None


@dataclass(frozen=True)
class Fetched:
    """The body was downloaded. ``final_url`` is the URL after redirects."""

    url: str
    final_url: str
    content: bytes
    validators: Validators
    content_type: str | None


@dataclass(frozen=True)
class NotModified:
    """The server answered 304: our copy (per the request's validators) is current."""

    url: str


@dataclass(frozen=True)
class Failed:
    """The URL could not be downloaded; ``reason`` is machine-readable (see module doc)."""

    url: str
    reason: str
    message: str


FetchOutcome = Fetched | NotModified | Failed


@dataclass(frozen=True)
class _Redirect:
    location: httpx.URL


class Fetcher:
    """Downloads URLs with the limits and guards of :class:`~cartag.settings.Settings`.

    Args:
        settings: Timeouts, limits, retry policy, allow-list and User-Agent.
        transport: Replaces the network (tests); the Fetcher closes it in :meth:`aclose`.
        resolver: Name resolution; defaults to :class:`SystemResolver`.

    Attributes:
        bytes_downloaded: Body bytes received so far, over all requests.
    """

    def __init__(
        self,
        settings: Settings,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        resolver: Resolver | None = None,
    ) -> None:
        self._settings = settings
        self._resolver = resolver or SystemResolver()
        self._allowed = list(settings.allowed_networks)
        self._global = asyncio.Semaphore(settings.download_concurrency)
        self._hosts = _HostLimiter(settings.per_host_concurrency)
        connect, read = settings.connect_timeout_s, settings.read_timeout_s
        self._deadline = connect + _ATTEMPT_READ_TIMEOUTS * read
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
        async with self._exchange(
            "POST", target, 0, 2 * timeout, json=payload, timeout=httpx.Timeout(timeout)
        ) as response:
            return response.status_code

    async def _fetch(self, request: FetchRequest) -> FetchOutcome:
        target = parse_target(request.url)
        validators = {"If-None-Match": request.etag, "If-Modified-Since": request.last_modified}
        # A validator httpx cannot send (non-ASCII, line breaks) would crash the
        # request; without it the download is merely unconditional.
        conditional = {k: v for k, v in validators.items() if v and v.isprintable() and v.isascii()}
        for _hop in range(self._settings.max_redirects + 1):
            get = functools.partial(self._get, request.url, target, conditional)
            result = await self._retrying(get)
            if not isinstance(result, _Redirect):
                return result
            target = parse_target(result.location)
        raise FetchError(
            f"more than {self._settings.max_redirects} redirects", "too_many_redirects"
        )

    async def _retrying(self, attempt: Callable[[int], Awaitable[_T]]) -> _T:
        number = 0
        while True:
            try:
                return await attempt(number)
            except FetchError as exc:
                if number >= self._settings.retries or not _is_transient(exc):
                    raise
            await asyncio.sleep(self._settings.retry_backoff_s * 2**number)
            number += 1

    async def _get(
        self, url: str, target: Target, conditional: dict[str, str], attempt: int
    ) -> Fetched | NotModified | _Redirect:
        async with self._exchange(
            "GET", target, attempt, self._deadline, headers=conditional
        ) as response:
            return await self._read(url, target, response)

    @contextlib.asynccontextmanager
    async def _exchange(
        self, method: str, target: Target, attempt: int, deadline: float, **kwargs: Any
    ) -> AsyncIterator[httpx.Response]:
        """Send one pinned request within the limits and yield the streaming response."""
        # Per-host first: waiting for a busy host must not hold a global slot.
        async with self._hosts.hold(target.host), self._global:
            pinned, headers, extensions = await pin_target(
                target,
                attempt,
                self._resolver,
                self._allowed,
                dns_timeout_s=self._settings.connect_timeout_s,
            )
            headers.update(kwargs.pop("headers", {}))
            with _translate_errors(target):
                async with (
                    asyncio.timeout(deadline),
                    self._client.stream(
                        method, pinned, headers=headers, extensions=extensions, **kwargs
                    ) as response,
                ):
                    yield response

    async def _read(
        self, url: str, target: Target, response: httpx.Response
    ) -> Fetched | NotModified | _Redirect:
        status = response.status_code
        location = response.headers.get("Location")
        if status in _REDIRECT_STATUSES and location:
            try:
                return _Redirect(target.url.join(location.strip()))
            except httpx.InvalidURL as exc:
                raise FetchError(
                    f"bad redirect location {location!r}: {exc}", "invalid_url"
                ) from None
        if status == 304:
            return NotModified(url=url)
        if not 200 <= status < 300:
            raise HTTPStatusError(f"{target.url} answered HTTP {status}", status)
        encoding = response.headers.get("Content-Encoding", "").strip().lower()
        if encoding not in ("", "identity"):
            raise FetchError(
                f"{target.url} sent a {encoding!r}-encoded body", "unsupported_encoding"
            )
        limit = self._settings.max_image_bytes
        declared = _parse_length(response.headers.get("Content-Length"))
        if declared is not None and declared > limit:
            raise TooLargeError(f"{target.url} declares {declared} bytes; the limit is {limit}")
        chunks: list[bytes] = []
        received = 0
        # Not aiter_raw(): that refuses bodies a MockTransport has already read.
        # Without a Content-Encoding (checked above) the two yield the same bytes.
        async for chunk in response.aiter_bytes():
            received += len(chunk)
            self.bytes_downloaded += len(chunk)
            if received > limit:
                raise TooLargeError(f"{target.url} sent more than {limit} bytes")
            chunks.append(chunk)
        return Fetched(
            url=url,
            final_url=str(target.url),
            content=b"".join(chunks),
            validators=Validators(
                etag=response.headers.get("ETag"),
                last_modified=response.headers.get("Last-Modified"),
                content_length=declared,
            ),
            content_type=response.headers.get("Content-Type"),
        )


class _HostLimiter:
    """A semaphore per host, created on demand and dropped when nobody uses it."""

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._slots: dict[str, tuple[asyncio.Semaphore, list[int]]] = {}

    @contextlib.asynccontextmanager
    async def hold(self, host: str) -> AsyncIterator[None]:
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


@contextlib.contextmanager
def _translate_errors(target: Target) -> Iterator[None]:
    """Turn httpx and asyncio failures into the FetchError family."""
    try:
        yield
    except TimeoutError:
        raise FetchTimeoutError(f"{target.url} took too long in total") from None
    except httpx.TimeoutException as exc:
        raise FetchTimeoutError(f"{target.url}: {type(exc).__name__}") from None
    except httpx.UnsupportedProtocol as exc:
        raise FetchError(f"{target.url}: {exc}", "invalid_url") from None
    except httpx.TransportError as exc:
        detail = str(exc) or type(exc).__name__
        raise FetchError(f"{target.url}: {detail}", "connection_error") from None


def _is_transient(exc: FetchError) -> bool:
    if isinstance(exc, HTTPStatusError):
        return exc.status >= 500
    return exc.reason in ("timeout", "connection_error")


def _parse_length(value: str | None) -> int | None:
    value = (value or "").strip()
    # isascii: str.isdigit also accepts digits like "²" that int() rejects.
    return int(value) if value.isascii() and value.isdigit() else None
