"""What the downloader is asked and what it answers, one outcome per URL.

:class:`~cartag.net.fetch.Fetcher` turns :class:`FetchRequest` objects into
outcomes (:class:`Fetched`, :class:`NotModified` or :class:`Failed`); a bad URL
never raises, it becomes a ``Failed`` with a machine-readable ``reason``:

* ``invalid_url``: not http(s), no or malformed host, bad port, bad redirect.
* ``dns_error``: the host name does not resolve.
* ``blocked_address``: the URL (or a redirect) points at a non-public network.
* ``connection_error``: refused, reset, TLS failure, protocol garbage.
* ``timeout``: connect or read timeout, an attempt took too long, or the URL used
  up ``download_deadline_s`` (all attempts and redirects together).
* ``too_large``: body over ``max_image_bytes`` (declared or streamed).
* ``too_many_redirects``: more than ``max_redirects`` hops.
* ``unsupported_encoding``: server compressed the body although asked not to.
* ``http_<status>``: the final answer was not 2xx/304 (e.g. ``http_404``).
"""

from __future__ import annotations

from dataclasses import dataclass


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
