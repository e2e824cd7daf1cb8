"""The SSRF guard: name resolution and the "may we connect to this address?" check.

cartag downloads URLs that users hand it, so without a guard anyone could make
the service read its own cloud metadata endpoint (``169.254.169.254``), an admin
port on ``127.0.0.1`` or a database on the private network. The rules:

* Only globally routable unicast addresses may be contacted, unless the address
  lies in one of ``Settings.allowed_networks`` (the explicit allow-list).
* Every address a name resolves to is checked, not just the first, so a name
  with one public and one private record is refused outright.
* The caller must connect to an address it checked (the fetcher pins the request
  to it) so that a second, different DNS answer cannot slip in between the check
  and the connect (DNS rebinding).

Resolution goes through :class:`Resolver`, a boundary injected into the fetcher,
so tests map names to addresses with :class:`StaticResolver` instead of patching.
Also here: the URL syntax check (:func:`parse_target`). The transport that keeps
TLS verification per host name once requests are pinned to addresses is
:class:`~cartag.net.transport.SniPoolTransport`.
"""

from __future__ import annotations

import asyncio
import functools
import ipaddress
import re
import socket
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import httpx

from cartag.errors import BlockedAddressError, FetchError

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

# Checked in addition to the ipaddress flags: what those flags mean has changed
# between Python releases, and these ranges must stay blocked whatever they say.
_ALWAYS_BLOCKED: tuple[IPNetwork, ...] = tuple(
    ipaddress.ip_network(cidr)
    for cidr in (
        "0.0.0.0/8",  # "this network"; 0.0.0.0 reaches localhost on Linux
        "10.0.0.0/8",
        "100.64.0.0/10",  # carrier-grade NAT
        "127.0.0.0/8",
        "169.254.0.0/16",  # link-local, including cloud metadata 169.254.169.254
        "172.16.0.0/12",
        "192.168.0.0/16",
        "224.0.0.0/4",  # multicast
        "240.0.0.0/4",  # reserved, including broadcast
        "::/128",
        "::1/128",
        "fc00::/7",  # unique-local
        "fe80::/10",  # link-local
        "ff00::/8",  # multicast
    )
)

_DEFAULT_PORTS = {"http": 80, "https": 443}
# One DNS label after IDNA encoding; underscores occur in real CDN names.
_LABEL = re.compile(r"^[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?$")
# URLs that httpx leaves exactly as they are (see _simple_target): lower-case host of
# such labels, no userinfo, a port without leading zeros, a path, and a query, of
# characters that need no percent-encoding (and complete %XX escapes), no fragment.
_PCHAR = r"(?:[A-Za-z0-9._~!$&'()*+,;=:@-]|%[0-9A-Fa-f]{2})"
_SIMPLE_URL = re.compile(
    r"(https?)://((?:[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?\.)*"
    r"[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?)"
    rf"(?::([1-9][0-9]{{0,4}}))?((?:/{_PCHAR}*)+)(\?(?:{_PCHAR}|[/?])*)?"
)
_DOTTED_QUAD = re.compile(r"[0-9]+\.[0-9]+\.[0-9]+\.[0-9]+")
_DOT_SEGMENT = re.compile(r"/\.\.?(?:/|$)")

# NAT64 gateways translate 64:ff9b::a.b.c.d to a.b.c.d, so judge the IPv4 part.
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")


class Resolver:
    """Turns a host name into the IP addresses to try (the DNS boundary).

    Subclasses raise :class:`~cartag.errors.FetchError` with ``reason="dns_error"``
    when the name does not resolve.
    """

    async def resolve(self, host: str, port: int) -> list[str]:
        """Return the IP address strings ``host`` resolves to, best first.

        Args:
            host: An ASCII (IDNA-encoded) host name.
            port: The port that will be connected to (some resolvers care).

        Returns:
            At least one address string such as ``"93.184.216.34"`` or ``"::1"``.

        Raises:
            FetchError: ``reason="dns_error"`` when the name cannot be resolved.
        """
        raise NotImplementedError


class SystemResolver(Resolver):
    """Resolves with the operating system's resolver (``getaddrinfo``), off the event loop."""

    async def resolve(self, host: str, port: int) -> list[str]:
        loop = asyncio.get_running_loop()
        try:
            infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except (OSError, UnicodeError) as exc:
            # UnicodeError: the idna codec rejects over-long labels before any lookup.
            raise FetchError(f"cannot resolve host {host!r}: {exc}", "dns_error") from exc
        addresses: list[str] = []
        for _family, _type, _proto, _canonname, sockaddr in infos:
            address = str(sockaddr[0])
            if address not in addresses:
                addresses.append(address)
        if not addresses:
            raise FetchError(f"host {host!r} has no addresses", "dns_error")
        return addresses


class StaticResolver(Resolver):
    """Resolves from a fixed table; for tests and pinned deployments.

    Example:
        ``StaticResolver({"cdn.example": ["127.0.0.1"]})``

    Args:
        table: Host name (case-insensitive, trailing dot ignored) to addresses.
    """

    def __init__(self, table: Mapping[str, Sequence[str]]) -> None:
        self._table = {_normalize_host(host): list(ips) for host, ips in table.items()}

    async def resolve(self, host: str, port: int) -> list[str]:
        addresses = self._table.get(_normalize_host(host))
        if not addresses:
            raise FetchError(f"cannot resolve host {host!r}: not in the static table", "dns_error")
        return list(addresses)


def check_ip(ip: str, allowed: Sequence[IPNetwork]) -> None:
    """Refuse an address that is not globally routable, unless it is allow-listed.

    Blocked: private, loopback, link-local (with cloud metadata), multicast,
    reserved, unspecified, carrier-grade NAT, ``0.0.0.0/8``, IPv6 unique-local,
    and IPv6 forms that embed such an IPv4 address (``::ffff:127.0.0.1``, NAT64
    ``64:ff9b::/96``, 6to4 ``2002::/16``).

    Args:
        ip: The address as a string; an IPv6 zone (``fe80::1%eth0``) is accepted.
        allowed: Networks that may be contacted even though they are not public.
            An IPv4-mapped or NAT64 address is allowed if its IPv4 form is.

    Raises:
        BlockedAddressError: The address is not allowed, or is not an IP address.
    """
    refusal = _refusal(ip, tuple(allowed))
    if refusal is not None:
        raise BlockedAddressError(refusal)


# Every request checks its server's address, and an inventory's images come from a
# few servers: the verdicts (pure functions of address and allow-list) are kept.
@functools.lru_cache(maxsize=4096)
def _refusal(ip: str, allowed: tuple[IPNetwork, ...]) -> str | None:
    """Why ``ip`` may not be contacted, or None if it may."""
    try:
        address: IPAddress = ipaddress.ip_address(ip)
    except ValueError:
        # Fail closed: whatever this is, it is not an address we checked.
        return f"{ip!r} is not an IP address"
    # ::ffff:a.b.c.d and 64:ff9b::a.b.c.d end up at a.b.c.d: judge that address.
    address = _translated_ipv4(address) or address
    if _in_networks(address, allowed):
        return None
    # A 6to4 address 2002:a.b.c.d:: is routed towards a.b.c.d as well.
    tunnelled = address.sixtofour if isinstance(address, ipaddress.IPv6Address) else None
    if not _is_public(address) or (tunnelled is not None and not _is_public(tunnelled)):
        return (
            f"address {ip} is not publicly routable; add its network to "
            "CARTAG_ALLOWED_NETWORKS to allow it"
        )
    return None


@functools.lru_cache(maxsize=4096)
def is_ip_literal(host: str) -> bool:
    """Tell whether ``host`` is an IP address rather than a name.

    Args:
        host: A URL host without brackets (``"::1"``, not ``"[::1]"``).
    """
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


@dataclass(frozen=True)
class Target:
    """A URL that passed the syntax checks, with its parts spelled out.

    Attributes:
        text: The URL, as httpx writes it.
        host: ASCII (IDNA) host, lower case, without trailing dot or brackets.
        port: Explicit or default port.
        scheme: ``http`` or ``https``.
        netloc: Host and explicit port as the ``Host`` header carries them.
        path: Path and query as the request line carries them.
        credentials: Whether the URL carries a user (and password), which httpx sends
            as Basic auth.
    """

    text: str
    host: str
    port: int
    scheme: str
    netloc: str
    path: bytes
    credentials: bool = False

    @functools.cached_property
    def url(self) -> httpx.URL:
        """The URL as given (not pinned to an address), parsed by httpx when first asked."""
        return httpx.URL(self.text)


def parse_target(url: str | httpx.URL) -> Target:
    """Check that ``url`` is an absolute http(s) URL with a sane host and port.

    Raises:
        FetchError: ``reason="invalid_url"`` otherwise.
    """
    if isinstance(url, str):
        simple = _simple_target(url)
        if simple is not None:
            return simple
    try:
        parsed = url if isinstance(url, httpx.URL) else httpx.URL(url)
    except (httpx.InvalidURL, TypeError) as exc:
        raise FetchError(f"invalid URL {url!r}: {exc}", "invalid_url") from None
    if parsed.scheme not in _DEFAULT_PORTS:
        raise FetchError(f"invalid URL {url!r}: only http and https are fetched", "invalid_url")
    host = _normalize_host(parsed.raw_host.decode("ascii"))
    if not host or not (is_ip_literal(host) or _is_hostname(host)):
        raise FetchError(f"invalid URL {url!r}: missing or malformed host", "invalid_url")
    port = parsed.port or _DEFAULT_PORTS[parsed.scheme]
    if not 0 < port < 65536:
        raise FetchError(f"invalid URL {url!r}: port out of range", "invalid_url")
    netloc = parsed.netloc.decode("ascii")
    target = Target(
        str(parsed), host, port, parsed.scheme, netloc, parsed.raw_path, bool(parsed.userinfo)
    )
    target.__dict__["url"] = parsed  # as cached_property stores it: no second parse
    return target


def _simple_target(url: str) -> Target | None:
    """The Target of a URL that httpx would keep exactly as it is, else None.

    Parsing with httpx took ~20 us of a revalidation's ~100; most image URLs are plain
    (lower-case host, no userinfo, fragment, dot segment or default port, path and
    query of characters httpx leaves alone), and for those the parts are plain slices.
    """
    match = _SIMPLE_URL.fullmatch(url)
    if match is None:
        return None
    scheme, host, port_text, path, query = match.groups()
    port = int(port_text) if port_text else _DEFAULT_PORTS[scheme]
    if (
        (port_text and (port == _DEFAULT_PORTS[scheme] or port > 65535))
        or (_DOTTED_QUAD.fullmatch(host) and not is_ip_literal(host))  # httpx refuses these
        or len(host) > 253
        or _DOT_SEGMENT.search(path)  # httpx removes them
    ):
        return None
    netloc = f"{host}:{port_text}" if port_text else host
    return Target(url, host, port, scheme, netloc, (path + (query or "")).encode("ascii"))


def _is_hostname(host: str) -> bool:
    return len(host) <= 253 and all(_LABEL.match(label) for label in host.split("."))


def _is_public(address: IPAddress) -> bool:
    if any(address.version == net.version and address in net for net in _ALWAYS_BLOCKED):
        return False
    return bool(
        address.is_global
        and not address.is_private
        and not address.is_loopback
        and not address.is_link_local
        and not address.is_multicast
        and not address.is_reserved
        and not address.is_unspecified
    )


def _translated_ipv4(address: IPAddress) -> ipaddress.IPv4Address | None:
    if not isinstance(address, ipaddress.IPv6Address):
        return None
    if address in _NAT64:
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return address.ipv4_mapped


def _in_networks(address: IPAddress, networks: Sequence[IPNetwork]) -> bool:
    # Comparing an IPv4 address with an IPv6 network raises TypeError, hence the version test.
    return any(address.version == net.version and address in net for net in networks)


def _normalize_host(host: str) -> str:
    return host.lower().rstrip(".")


async def pin_address(
    target: Target,
    attempt: int,
    resolver: Resolver,
    allowed: Sequence[IPNetwork],
    *,
    dns_timeout_s: float,
) -> str:
    """Resolve and check a host; return the address to connect to.

    Every address the name resolves to is checked; attempt ``n`` gets the ``n``-th
    (rotating), so a retry can get past one dead address.

    Raises:
        BlockedAddressError: An address of the host is not allowed.
        FetchError: ``dns_error`` when the name doesn't resolve in time.
    """
    if is_ip_literal(target.host):
        check_ip(target.host, allowed)
        return target.host
    try:
        async with asyncio.timeout(dns_timeout_s):
            addresses = await resolver.resolve(target.host, target.port)
    except TimeoutError:
        raise FetchError(f"resolving {target.host} timed out", "dns_error") from None
    if not addresses:
        raise FetchError(f"host {target.host} has no addresses", "dns_error")
    for address in addresses:
        check_ip(address, allowed)
    return addresses[attempt % len(addresses)]


async def pin_target(
    target: Target,
    attempt: int,
    resolver: Resolver,
    allowed: Sequence[IPNetwork],
    *,
    dns_timeout_s: float,
) -> tuple[httpx.URL, dict[str, str], dict[str, Any]]:
    """Resolve and check a host; return the URL to connect to, headers and extensions.

    The URL's host is replaced by the address that was checked (:func:`pin_address`),
    so a second DNS answer can't swap in a forbidden one; the real name travels in
    ``Host`` and, for https, as the TLS server name.

    Raises:
        BlockedAddressError: An address of the host is not allowed.
        FetchError: ``dns_error`` when the name doesn't resolve in time.
    """
    address = await pin_address(target, attempt, resolver, allowed, dns_timeout_s=dns_timeout_s)
    return pinned_request(target, address)


def pinned_request(
    target: Target, address: str
) -> tuple[httpx.URL, dict[str, str], dict[str, Any]]:
    """The URL (host replaced by ``address``), headers and extensions of a pinned request.

    Args:
        target: The URL as given.
        address: What :func:`pin_address` returned for it.

    Raises:
        FetchError: ``dns_error`` when the address cannot stand in a URL (a zone).
    """
    if is_ip_literal(target.host):
        return target.url, {}, {}
    headers = {"Host": target.url.netloc.decode("ascii")}
    extensions: dict[str, Any] = {}
    if target.url.scheme == "https":
        extensions["sni_hostname"] = target.host
    try:
        pinned = target.url.copy_with(host=address)
    except httpx.InvalidURL:  # e.g. an allowed link-local address with a zone
        raise FetchError(f"cannot connect to {address!r}", "dns_error") from None
    return pinned, headers, extensions
