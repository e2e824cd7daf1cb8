"""POST to an operator-configured endpoint (a vendor API) under the SSRF guard.

:class:`GuardedPoster` is the small sibling of :class:`~cartag.net.fetch.Fetcher`
for calls that send a body and need the answer's bytes. Each attempt resolves the
host, checks every address with :func:`~cartag.net.guard.check_ip` (the
allow-list is ``Settings.allowed_networks``) and connects to the checked address,
exactly as downloads do. Redirects are not followed — a 3xx is an error — so
headers such as an API key never travel to another host. 5xx answers, timeouts
and connection errors are retried with exponential backoff; nothing else is.

Failures raise the :class:`~cartag.errors.FetchError` family, whose ``reason``
(``timeout``, ``http_503``, ``connection_error``, ``blocked_address``,
``dns_error``, ``invalid_url``, ``too_large``) callers turn into their own reasons.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from http.cookiejar import CookieJar, DefaultCookiePolicy
from typing import Final

import httpx

from cartag.errors import FetchError, FetchTimeoutError, HTTPStatusError, TooLargeError
from cartag.net.guard import Resolver, SystemResolver, Target, parse_target, pin_target
from cartag.net.limits import is_transient
from cartag.net.transport import SniPoolTransport
from cartag.settings import Settings

# Vendor answers are small JSON documents; anything bigger is a misbehaving server.
DEFAULT_MAX_RESPONSE_BYTES: Final[int] = 1024 * 1024


class GuardedPoster:
    """Sends POST requests within the address guard, a time limit and a retry policy.

    Concurrency is the caller's to bound (the connection pool holds at most
    ``max_connections`` connections); a GuardedPoster owns an ``httpx.AsyncClient``:
    create it, use it and close it within one event loop.

    Args:
        settings: The allow-list, the retry policy (``retries``,
            ``retry_backoff_s``) and the User-Agent.
        timeout_s: Limit of one attempt, from resolving the name to the last byte.
        max_connections: Size of the connection pool.
        max_response_bytes: Longer answers raise ``too_large``.
        transport: Replaces the network (tests); closed by :meth:`aclose`.
        resolver: Name resolution; defaults to :class:`SystemResolver`.
    """

    def __init__(
        self,
        settings: Settings,
        *,
        timeout_s: float,
        max_connections: int = 8,
        max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES,
        transport: httpx.AsyncBaseTransport | None = None,
        resolver: Resolver | None = None,
    ) -> None:
        self._allowed = list(settings.allowed_networks)
        self._retries = settings.retries
        self._backoff_s = settings.retry_backoff_s
        self._timeout_s = timeout_s
        self._max_bytes = max_response_bytes
        self._resolver = resolver or SystemResolver()
        if transport is None:
            n = max_connections
            transport = SniPoolTransport(
                limits=httpx.Limits(max_connections=n, max_keepalive_connections=n)
            )
        self._client = httpx.AsyncClient(
            transport=transport,
            follow_redirects=False,
            # Proxies from the environment would resolve names themselves and
            # defeat the address check, so the environment is ignored.
            trust_env=False,
            timeout=httpx.Timeout(timeout_s),
            headers={
                "User-Agent": settings.user_agent,
                "Accept": "application/json",
                # A compressed body could expand far past the size limit in one chunk.
                "Accept-Encoding": "identity",
            },
            cookies=CookieJar(DefaultCookiePolicy(allowed_domains=[])),
        )

    async def aclose(self) -> None:
        """Close the connections (and the transport)."""
        await self._client.aclose()

    async def post(self, url: str, content: bytes, headers: Mapping[str, str]) -> bytes:
        """POST ``content`` to ``url`` and return the body of a 2xx answer.

        Args:
            url: An absolute http(s) URL.
            content: The request body.
            headers: Request headers (``Content-Type``, credentials).

        Returns:
            The response body.

        Raises:
            FetchError: When the last attempt failed; ``reason`` says why.
        """
        target = parse_target(url)
        attempt = 0
        while True:
            try:
                return await self._attempt(target, content, headers, attempt)
            except FetchError as exc:
                if attempt >= self._retries or not is_transient(exc):
                    raise
            await asyncio.sleep(self._backoff_s * 2**attempt)
            attempt += 1

    async def _attempt(
        self, target: Target, content: bytes, headers: Mapping[str, str], attempt: int
    ) -> bytes:
        try:
            async with asyncio.timeout(self._timeout_s):
                pinned, pin_headers, extensions = await pin_target(
                    target, attempt, self._resolver, self._allowed, dns_timeout_s=self._timeout_s
                )
                async with self._client.stream(
                    "POST",
                    pinned,
                    content=content,
                    headers=pin_headers | dict(headers),
                    extensions=extensions,
                ) as response:
                    return await self._read(target, response)
        except TimeoutError:
            raise FetchTimeoutError(f"{target.url} took over {self._timeout_s} s") from None
        except httpx.TimeoutException as exc:
            raise FetchTimeoutError(f"{target.url}: {type(exc).__name__}") from None
        except httpx.TransportError as exc:
            detail = str(exc) or type(exc).__name__
            raise FetchError(f"{target.url}: {detail}", "connection_error") from None

    async def _read(self, target: Target, response: httpx.Response) -> bytes:
        status = response.status_code
        if not 200 <= status < 300:
            raise HTTPStatusError(f"{target.url} answered HTTP {status}", status)
        limit = self._max_bytes
        chunks: list[bytes] = []
        received = 0
        async for chunk in response.aiter_bytes():
            received += len(chunk)
            if received > limit:
                raise TooLargeError(f"{target.url} sent more than {limit} bytes")
            chunks.append(chunk)
        return b"".join(chunks)
