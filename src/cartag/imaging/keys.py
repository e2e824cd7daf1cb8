"""Cache keys for downloaded images, and a perceptual hash to spot near-duplicates.

An image is stored under one *image key*:

* ``v1:<sha256>`` — a *validators key* built from the URL and the HTTP cache
  validators (``ETag`` / ``Last-Modified``). It lets a re-classification skip
  the download entirely when the server answers ``304 Not Modified``.
* ``sha256:<hex>`` — a *content key*, the digest of the bytes. Used when the
  server sends no validators, or when its host is listed in
  ``Settings.content_hash_hosts`` because its validators are known to lie
  (e.g. a CDN that sends the same ETag for every object).

The perceptual hash (:func:`phash`) is independent of either key: it lets a
manual fix made on one image carry over to re-encoded or resized copies of it.
:func:`hamming` is the distance between two such hashes.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Sequence
from functools import lru_cache
from urllib.parse import urlsplit, urlunsplit

import numpy as np
import numpy.typing as npt
from PIL import Image

from cartag.errors import FetchError
from cartag.imaging.resample import lanczos_shrink

VALIDATORS_KEY_PREFIX = "v1:"
CONTENT_KEY_PREFIX = "sha256:"

_DEFAULT_PORTS = {"http": 80, "https": 443}
# C0 controls and DEL, but tab, CR and LF: urlsplit drops those (as browsers do).
_CONTROL = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
# A lone UTF-16 surrogate: JSON's "\ud800" escape decodes to one, which is no character
# and cannot be encoded as UTF-8 (for the store or for a request line).
_SURROGATE = re.compile("[\ud800-\udfff]")
# Longest image URL accepted, as sent and normalized (the length of urls.url).
MAX_URL_LENGTH = 2048

_PHASH_SIZE = 32  # side of the grayscale thumbnail the DCT runs on
_PHASH_LOW = 8  # side of the low-frequency block the bits come from


def content_sha256(data: bytes) -> str:
    """Return the SHA-256 of ``data`` as 64 lowercase hex characters."""
    return hashlib.sha256(data).hexdigest()


def content_key(sha256_hex: str) -> str:
    """Return the content image key (``"sha256:" + hex``) for a SHA-256 hex digest."""
    return CONTENT_KEY_PREFIX + sha256_hex.lower()


def _split_netloc(netloc: str) -> tuple[str, str, str | None]:
    """Split ``[userinfo@]host[:port]`` into its three parts.

    Done by hand because ``urllib``'s ``.port`` raises on a malformed port and
    ``.hostname`` drops the brackets of an IPv6 literal; a key function must
    never raise on a URL that the downloader already accepted.

    Returns:
        ``(userinfo_with_at, host, port)``: ``userinfo_with_at`` is ``""`` or
        ends in ``"@"``; ``host`` keeps IPv6 brackets; ``port`` is ``None``
        when absent.
    """
    userinfo, at, hostport = netloc.rpartition("@")
    prefix = userinfo + at
    if hostport.startswith("["):
        end = hostport.find("]")
        if end != -1:
            rest = hostport[end + 1 :]
            port = rest[1:] if rest.startswith(":") else None
            return prefix, hostport[: end + 1], port
        return prefix, hostport, None
    host, sep, port = hostport.rpartition(":")
    if not sep:
        return prefix, hostport, None
    return prefix, host, port


def _normalize_port(scheme: str, port: str | None) -> str | None:
    # An empty port ("host:") and the scheme's default port both mean "no port".
    if not port:
        return None
    if port.isdigit():
        if int(port) == _DEFAULT_PORTS.get(scheme):
            return None
        return str(int(port))
    return port


def normalize_url(url: str) -> str:
    """Canonical form of an image URL, for use in a cache key.

    Lowercases the scheme and host, drops the scheme's default port, an empty
    port and the fragment (never sent to the server). The path and query are
    kept byte for byte: servers may treat them case-sensitively and the order
    of query parameters can matter (signed URLs). Only an empty query (a bare
    trailing ``?``) disappears, as ``urllib`` cannot tell it from none.

    Args:
        url: An absolute URL.

    Returns:
        The normalized URL, e.g. ``"HTTPS://CDN.Example.com:443/A.jpg#x"`` ->
        ``"https://cdn.example.com/A.jpg"``.
    """
    parts = urlsplit(url.strip())
    scheme = parts.scheme.lower()
    userinfo, host, port = _split_netloc(parts.netloc)
    port = _normalize_port(scheme, port)
    netloc = userinfo + host.lower() + (f":{port}" if port is not None else "")
    return urlunsplit((scheme, netloc, parts.path, parts.query, ""))


def request_url(url: str) -> str:
    """Check an image URL a client sent and return its :func:`normalize_url` form.

    Runs before anything else looks at the URL, so that one bad URL is that image's
    ``skipped`` result and never fails its batch or reaches the store.

    Raises:
        FetchError: ``reason="url_too_long"`` over :data:`MAX_URL_LENGTH` characters;
            ``reason="invalid_url"`` when it is not an absolute http(s) URL with a host,
            cannot be parsed at all (``http://[::1/``) or holds a control character
            (NUL: PostgreSQL's text cannot store it; tabs and line breaks are dropped,
            as browsers drop them) or a lone UTF-16 surrogate (no character at all).
    """
    if len(url) > MAX_URL_LENGTH:
        raise FetchError(
            f"the URL has {len(url):,} characters; at most {MAX_URL_LENGTH:,} are accepted",
            "url_too_long",
        )
    control = _CONTROL.search(url.strip())
    if control is not None:
        raise FetchError(
            f"invalid URL: a control character (U+{ord(control.group()):04X}) at position "
            f"{control.start()}; percent-encode it (%{ord(control.group()):02X}) or remove it",
            "invalid_url",
        )
    surrogate = _SURROGATE.search(url)
    if surrogate is not None:
        raise FetchError(
            f"invalid URL: a lone UTF-16 surrogate (U+{ord(surrogate.group()):04X}) at "
            f"position {surrogate.start()}, which is not a character; send the URL as "
            "UTF-8 text, its non-ASCII bytes percent-encoded",
            "invalid_url",
        )
    try:
        parts = urlsplit(url.strip())
        normalized = normalize_url(url)
    except ValueError as exc:  # urllib: "Invalid IPv6 URL", bad characters in the host
        raise FetchError(f"invalid URL: {exc}", "invalid_url") from None
    if parts.scheme.lower() not in _DEFAULT_PORTS or not parts.netloc:
        raise FetchError("invalid URL: an absolute http:// or https:// URL", "invalid_url")
    if len(normalized) > MAX_URL_LENGTH:
        raise FetchError(
            f"the normalized URL is over {MAX_URL_LENGTH:,} characters", "url_too_long"
        )
    return normalized


def storable_url(url: str) -> str:
    """``url`` with what no store or JSON text can hold percent-encoded: NUL as ``%00``,
    a lone surrogate as the bytes Python's ``surrogatepass`` gives it (``%ED%A0%80``).

    For keeping a URL that :func:`request_url` refuses (a job item, its skipped result).
    """
    url = url.replace("\x00", "%00")
    return _SURROGATE.sub(
        lambda m: "".join(f"%{b:02X}" for b in m.group().encode("utf-8", "surrogatepass")), url
    )


def echoable_url(url: str) -> str:
    """``url`` as an answer can repeat it: a lone surrogate becomes U+FFFD (the
    replacement character), as no JSON encoder that writes UTF-8 can send one."""
    return _SURROGATE.sub("\ufffd", url)


def url_host(url: str) -> str:
    """Return the URL's host: lowercase, without port, brackets or a trailing dot."""
    _, host, _ = _split_netloc(urlsplit(url.strip()).netloc)
    return host.lower().strip("[]").rstrip(".")


def host_matches(host: str, patterns: Sequence[str]) -> bool:
    """Whether ``host`` is listed in ``patterns``.

    Args:
        host: A lowercase host name as returned by :func:`url_host`.
        patterns: Host names; ``"*.example.com"`` matches every subdomain of
            ``example.com`` (but not ``example.com`` itself, as in TLS).
    """
    for raw in patterns:
        pattern = raw.strip().lower().rstrip(".")
        if not pattern:
            continue
        if pattern.startswith("*."):
            if host.endswith(pattern[1:]):
                return True
        elif host == pattern:
            return True
    return False


def _present(value: str | None) -> str | None:
    # An empty header value validates nothing.
    if value is None or not value.strip():
        return None
    return value.strip()


def validators_key(
    url: str, etag: str | None, last_modified: str | None, content_length: int | None
) -> str | None:
    """Key an image by its URL and HTTP validators.

    Args:
        url: The URL the image was fetched from (normalized here).
        etag: The ``ETag`` response header, verbatim (weak ``W/`` prefix kept).
        last_modified: The ``Last-Modified`` response header, verbatim.
        content_length: The body length in bytes, if known. It is part of the
            key (a cheap guard against a validator reused for new content) but
            on its own is not a validator.

    Returns:
        ``"v1:" + sha256 hex`` of a canonical JSON encoding of the four fields,
        or ``None`` when neither ``etag`` nor ``last_modified`` is present.
    """
    etag = _present(etag)
    last_modified = _present(last_modified)
    if etag is None and last_modified is None:
        return None
    # JSON with fixed separators is unambiguous (strings are quoted and
    # escaped, null differs from ""), so distinct tuples never collide.
    canonical = json.dumps(
        [normalize_url(url), etag, last_modified, content_length],
        ensure_ascii=False,
        separators=(",", ":"),
    )
    return VALIDATORS_KEY_PREFIX + hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def validators_trusted(url: str, content_hash_hosts: Sequence[str]) -> bool:
    """Whether ``url``'s ETag / Last-Modified may stand for its bytes.

    False for hosts listed in ``content_hash_hosts``: their images are keyed by content,
    and a conditional request to them is not sent either, since their 304 would say
    "unchanged" for a replaced photo as readily as their ETag does.
    """
    return not (content_hash_hosts and host_matches(url_host(url), content_hash_hosts))


def choose_image_key(
    url: str,
    etag: str | None,
    last_modified: str | None,
    content_length: int | None,
    sha256_hex: str,
    *,
    content_hash_hosts: Sequence[str],
) -> str:
    """Pick the key an image is stored under.

    Args:
        url: The URL the image was fetched from.
        etag: ``ETag`` response header or ``None``.
        last_modified: ``Last-Modified`` response header or ``None``.
        content_length: Body length in bytes or ``None``.
        sha256_hex: SHA-256 of the body (:func:`content_sha256`).
        content_hash_hosts: Hosts whose validators are not trusted; entries
            like ``"*.example.com"`` cover subdomains.

    Returns:
        :func:`content_key` when the host is listed or the response carried no
        validators, else :func:`validators_key`.
    """
    if not validators_trusted(url, content_hash_hosts):
        return content_key(sha256_hex)
    key = validators_key(url, etag, last_modified, content_length)
    return key if key is not None else content_key(sha256_hex)


@lru_cache(maxsize=4)
def _dct_matrix(n: int) -> npt.NDArray[np.float64]:
    """Orthonormal DCT-II basis.

    Returns:
        Array of shape ``(n, n)``: row ``k`` is the ``k``-th cosine basis
        vector, so ``M @ x`` is the DCT-II of a length-``n`` signal ``x``.
    """
    k = np.arange(n, dtype=np.float64)[:, None]
    i = np.arange(n, dtype=np.float64)[None, :]
    matrix: npt.NDArray[np.float64] = np.sqrt(2.0 / n) * np.cos(
        np.pi * (2.0 * i + 1.0) * k / (2.0 * n)
    )
    matrix[0, :] /= np.sqrt(2.0)
    matrix.setflags(write=False)  # shared between threads through the cache
    return matrix


def phash(image: Image.Image) -> str:
    """64-bit DCT perceptual hash.

    The image is converted to grayscale and resized to 32x32 (LANCZOS); a 2-D
    DCT-II is taken; the 8x8 block of lowest frequencies is compared with the
    median of its 63 AC coefficients. The DC term is left out of the median
    because it is the mean brightness times 32 and would dwarf the rest; its
    own bit is kept (almost always 1) so the hash stays 64 bits.

    Args:
        image: Any PIL image; alpha is ignored, so pass the decoded RGB image.

    Returns:
        16 lowercase hex characters, most significant bit = coefficient (0, 0),
        row-major.
    """
    gray = image.convert("L")
    width, height = gray.size
    if width == height >= _PHASH_SIZE:
        # The network's square view: Pillow's LANCZOS to the bit, in about 60 % of its time.
        small = lanczos_shrink(np.asarray(gray, dtype=np.uint8), _PHASH_SIZE)
    else:
        small = np.asarray(gray.resize((_PHASH_SIZE, _PHASH_SIZE), Image.Resampling.LANCZOS))
    pixels = small.astype(np.float64)  # (32, 32)
    basis = _dct_matrix(_PHASH_SIZE)  # (32, 32)
    coefficients = basis @ pixels @ basis.T  # (32, 32); [0, 0] is DC
    # Flat areas give AC terms of ~1e-13 whose sign depends on the BLAS
    # summation order; rounding makes them exactly 0 so a flat image hashes
    # the same on every machine. Real coefficients are orders of magnitude larger.
    coefficients = np.round(coefficients, 6)
    low = coefficients[:_PHASH_LOW, :_PHASH_LOW].ravel()  # (64,)
    median = float(np.median(low[1:]))
    value = 0
    for bit in low > median:
        value = (value << 1) | int(bit)
    return f"{value:016x}"


def hamming(a: str, b: str) -> int:
    """Number of differing bits between two hex hashes of the same length.

    Raises:
        ValueError: The hashes differ in length or are not hex.
    """
    if len(a) != len(b):
        raise ValueError(f"hashes differ in length: {len(a)} vs {len(b)}")
    return (int(a, 16) ^ int(b, 16)).bit_count()
