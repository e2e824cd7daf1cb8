"""Reading a download's answer, from httpx or from the lean revalidation path alike.

:func:`read_answer` turns an answer's status, headers and body into the fetcher's
outcome (or a :class:`Redirect` to follow, or a :class:`~cartag.errors.FetchError`);
:func:`translate` turns the transport's exceptions into the FetchError family. The
answer is anything with a status, headers by lower-case name and ``aiter_bytes``:
an ``httpx.Response`` or a :class:`~cartag.net.revalidate.LeanResponse`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import httpx

from cartag.errors import FetchError, FetchTimeoutError, HTTPStatusError, TooLargeError
from cartag.net.guard import Target
from cartag.net.outcomes import Fetched, NotModified, Validators
from cartag.net.revalidate import Answer

_REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
# Bodies of 304s (none) and redirects (a short page) read to keep the connection.
_DRAIN_BYTES = 16 * 1024


@dataclass(frozen=True)
class Redirect:
    """The answer was a redirect to ``location`` (absolute, not yet checked)."""

    location: httpx.URL


async def read_answer(
    url: str, target: Target, response: Answer, limit: int, received: Callable[[int], None]
) -> Fetched | NotModified | Redirect:
    """The outcome of an answer to a GET.

    Args:
        url: The URL as requested (before redirects).
        target: The URL this answer is for.
        response: The answer; its body is read here (the caller closes it).
        limit: Most body bytes accepted (``max_image_bytes``).
        received: Told the size of every piece of body as it arrives.

    Raises:
        FetchError: ``http_<status>``, ``too_large``, ``unsupported_encoding``, or
            ``invalid_url`` for a redirect to a malformed location.
    """
    # Header names in lower case: a LeanResponse's are (httpx's match any case).
    status = response.status_code
    location = response.headers.get("location")
    if status in _REDIRECT_STATUSES and location:
        try:
            redirect = Redirect(target.url.join(location.strip()))
        except httpx.InvalidURL as exc:
            raise FetchError(f"bad redirect location {location!r}: {exc}", "invalid_url") from None
        await finish(response)
        return redirect
    if status == 304:
        # A 304 has no body, but the connection only goes back to the pool once
        # the end of the message has been read: unread, every revalidation would
        # open (and, with TLS, handshake) a new connection.
        await finish(response)
        return NotModified(url=url)
    if not 200 <= status < 300:
        raise HTTPStatusError(f"{target.url} answered HTTP {status}", status)
    encoding = response.headers.get("content-encoding", "").strip().lower()
    if encoding not in ("", "identity"):
        raise FetchError(f"{target.url} sent a {encoding!r}-encoded body", "unsupported_encoding")
    declared = _parse_length(response.headers.get("content-length"))
    if declared is not None and declared > limit:
        raise TooLargeError(f"{target.url} declares {declared} bytes; the limit is {limit}")
    chunks: list[bytes] = []
    size = 0
    # Not aiter_raw(): that refuses bodies a MockTransport has already read.
    # Without a Content-Encoding (checked above) the two yield the same bytes.
    async for chunk in response.aiter_bytes():
        size += len(chunk)
        received(len(chunk))
        if size > limit:
            raise TooLargeError(f"{target.url} sent more than {limit} bytes")
        chunks.append(chunk)
    return Fetched(
        url=url,
        final_url=str(target.url),
        content=b"".join(chunks),
        validators=Validators(
            etag=response.headers.get("etag"),
            last_modified=response.headers.get("last-modified"),
            content_length=declared,
        ),
        content_type=response.headers.get("content-type"),
    )


async def finish(response: Answer) -> None:
    """Read a short body to its end, so that the connection can be kept alive.

    Stops after ``_DRAIN_BYTES``: a longer body (a redirect page) costs less on a
    new connection than read here; closing the response then closes its connection.
    """
    size = 0
    try:
        async for chunk in response.aiter_bytes():
            size += len(chunk)
            if size > _DRAIN_BYTES:
                return
    except httpx.HTTPError:
        return  # the answer is already known; only the connection is lost


def translate(target: Target, exc: TimeoutError | httpx.TransportError) -> FetchError:
    """The FetchError for a failed exchange: ``timeout``, ``invalid_url`` or ``connection_error``.

    Args:
        target: The URL of the exchange.
        exc: ``TimeoutError`` (the exchange's deadline) or an httpx transport error.
    """
    if isinstance(exc, TimeoutError):
        return FetchTimeoutError(f"{target.url} took too long in total")
    if isinstance(exc, httpx.TimeoutException):
        return FetchTimeoutError(f"{target.url}: {type(exc).__name__}")
    if isinstance(exc, httpx.UnsupportedProtocol):
        return FetchError(f"{target.url}: {exc}", "invalid_url")
    detail = str(exc) or type(exc).__name__
    return FetchError(f"{target.url}: {detail}", "connection_error")


def _parse_length(value: str | None) -> int | None:
    value = (value or "").strip()
    # isascii: str.isdigit also accepts digits like "²" that int() rejects.
    return int(value) if value.isascii() and value.isdigit() else None
