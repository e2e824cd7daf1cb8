"""The SSRF guard: address rules, resolvers, URL syntax and pinning.

The second half drives a real Fetcher against a local server to show that the
guard holds end to end (literal addresses, names, every resolved address,
redirects, DNS rebinding).
"""

from __future__ import annotations

import asyncio
import random
import shutil
import ssl
import subprocess
from collections.abc import Iterator
from ipaddress import IPv4Network, ip_network
from pathlib import Path
from typing import Any

import httpx
import pytest

from cartag.errors import BlockedAddressError, FetchError
from cartag.net.fetch import Fetcher
from cartag.net.guard import (
    Resolver,
    StaticResolver,
    SystemResolver,
    check_ip,
    is_ip_literal,
    parse_target,
)
from cartag.net.outcomes import Failed, Fetched, FetchOutcome, FetchRequest
from cartag.net.transport import SniPoolTransport
from cartag.settings import Settings
from tests.support.http_server import ImageServer
from tests.support.images import jpeg_bytes

LOOPBACK = [ip_network("127.0.0.0/8")]


# Private, loopback, link-local (cloud metadata), CGNAT, "this network", multicast,
# reserved, documentation, benchmarking, and IPv6 spellings of such addresses
# (IPv4-mapped, NAT64 64:ff9b::/96, 6to4 2002::/16).
BLOCKED = """
    127.0.0.1 127.1.2.3 10.0.0.1 172.16.5.4 192.168.1.1 169.254.169.254 169.254.0.1
    100.64.0.1 0.0.0.0 0.1.2.3 224.0.0.1 239.255.255.250 240.0.0.1 255.255.255.255
    192.0.2.1 198.18.0.1 ::1 :: fe80::1 fe80::1%eth0 fc00::1 fd12:3456::1 ff02::1 ff0e::1
    2001:db8::1 ::ffff:127.0.0.1 ::ffff:169.254.169.254 ::ffff:10.0.0.1 64:ff9b::7f00:1
    2002:7f00:1:: 2002:a9fe:a9fe::
""".split()


@pytest.mark.parametrize("ip", BLOCKED)
def test_check_ip_blocks_non_public_addresses(ip: str) -> None:
    with pytest.raises(BlockedAddressError) as info:
        check_ip(ip, [])
    assert info.value.reason == "blocked_address"
    assert isinstance(info.value, FetchError)


@pytest.mark.parametrize(
    "ip",
    ["8.8.8.8", "93.184.216.34", "2606:4700:4700::1111", "::ffff:8.8.8.8", "64:ff9b::808:808"],
)
def test_check_ip_allows_public_addresses(ip: str) -> None:
    check_ip(ip, [])


def test_allow_list_opens_exactly_its_networks() -> None:
    check_ip("127.0.0.1", LOOPBACK)
    check_ip("127.200.0.9", LOOPBACK)
    check_ip("::ffff:127.0.0.1", LOOPBACK)  # mapped form of an allowed IPv4 address
    check_ip("fe80::1", [ip_network("fe80::/10")])
    check_ip("10.1.2.3", [ip_network("10.0.0.0/8")])
    with pytest.raises(BlockedAddressError):
        check_ip("10.0.0.1", LOOPBACK)
    with pytest.raises(BlockedAddressError):
        check_ip("::1", LOOPBACK)  # IPv6 loopback is a different network
    with pytest.raises(BlockedAddressError):
        check_ip("169.254.169.254", LOOPBACK)


@pytest.mark.parametrize("value", ["localhost", "", "127.0.0.1.5", "1.2.3", "[::1]"])
def test_check_ip_fails_closed_on_non_addresses(value: str) -> None:
    with pytest.raises(BlockedAddressError):
        check_ip(value, LOOPBACK)


def test_is_ip_literal() -> None:
    assert is_ip_literal("127.0.0.1")
    assert is_ip_literal("::1")
    assert not is_ip_literal("example.com")
    assert not is_ip_literal("2130706433")


def test_static_resolver_maps_names_case_insensitively() -> None:
    resolver = StaticResolver({"CDN.example": ["127.0.0.1", "::1"]})
    assert asyncio.run(resolver.resolve("cdn.example", 80)) == ["127.0.0.1", "::1"]
    assert asyncio.run(resolver.resolve("Cdn.Example.", 443)) == ["127.0.0.1", "::1"]


def test_static_resolver_unknown_host_is_dns_error() -> None:
    with pytest.raises(FetchError) as info:
        asyncio.run(StaticResolver({}).resolve("nowhere.example", 80))
    assert info.value.reason == "dns_error"


def test_system_resolver_resolves_localhost_to_loopback() -> None:
    addresses = asyncio.run(SystemResolver().resolve("localhost", 80))
    assert addresses
    assert all(a == "::1" or a.startswith("127.") for a in addresses)
    with pytest.raises(BlockedAddressError):
        check_ip(addresses[0], [])


def test_system_resolver_failure_is_dns_error() -> None:
    # A label over 63 characters fails inside the resolver, without a network query.
    with pytest.raises(FetchError) as info:
        asyncio.run(SystemResolver().resolve("a" * 64 + ".invalid", 80))
    assert info.value.reason == "dns_error"


def test_parse_target_normalizes_host_and_port() -> None:
    target = parse_target("HTTPS://CDN.Example./a.jpg?x=1")
    assert (target.host, target.port) == ("cdn.example", 443)
    assert parse_target("http://[::1]:8080/").host == "::1"
    assert parse_target("http://bücher.example/").host == "xn--bcher-kva.example"


@pytest.mark.parametrize(
    "url",
    [
        "ftp://example.com/a.jpg",
        "file:///etc/passwd",
        "javascript:alert(1)",
        "not a url",
        "",
        "http://",
        "http:///a.jpg",
        "//example.com/a.jpg",
        "http://exa mple.com/a.jpg",
        "http://a..b/",
        "http://-bad-.example/",
        "http://" + "a" * 64 + ".example/",
        "http://example.com:99999/",
        "http://[::1/",
    ],
)
def test_parse_target_rejects_bad_urls(url: str) -> None:
    with pytest.raises(FetchError) as info:
        parse_target(url)
    assert info.value.reason == "invalid_url"


def _parts(url: str | httpx.URL) -> tuple[object, ...]:
    """What parse_target makes of ``url`` (a string may take the plain-URL shortcut;
    an httpx.URL never does), or the reason it refuses it."""
    try:
        t = parse_target(url)
    except FetchError as exc:
        return ("refused", exc.reason)
    return (t.text, t.host, t.port, t.scheme, t.netloc, t.path, str(t.url), t.url.raw_path)


PLAIN = [
    "http://cdn.example.com/a.jpg",
    "https://img-1.cdn_x.test:8443/x/y.jpeg?w=800&h=600",
    "http://127.0.0.1:41234/img/1.jpg",
    "http://a.example/%41%7e/c;d,e=f@g:h!$'()*+~?q=1/2?3&r=%2F",
    "http://1.2.3.4/a/.well-known/x..y",
    "http://127.1/x",  # a name to httpx (not four numbers): resolved, as before
]
NOT_PLAIN = [
    "HTTP://A.example/x",
    "http://a.example:80/x",
    "https://a.example:443/x",
    "http://a.example/a/../b",
    "http://a.example/./x",
    "http://a.example/x/..",
    "http://user:pw@a.example/x",
    "http://a.example/x#top",
    "http://a.example?q",
    "http://a.example",
    "http://a.example/x y",
    "http://a.example/%zz",
    "http://a.example/[x]",
    "http://1.2.3.256/x",
    "http://01.2.3.4/x",
    "http://a.example:99999/x",
    "http://a.example:080/x",
    "http://[::1]:8080/x",
    "http://a.example./x",
    "http://b\u00fccher.example/x",
]


def test_plain_urls_are_taken_apart_as_httpx_takes_them() -> None:
    for url in PLAIN:
        target = parse_target(url)
        assert "url" not in vars(target), url  # the shortcut: httpx has not parsed it
        assert _parts(url) == _parts(httpx.URL(url)), url
        assert target.text == url
    for url in NOT_PLAIN:
        if not isinstance(_parts(url)[0], str) or _parts(url)[0] == "refused":
            continue
        assert "url" in vars(parse_target(url)), url
        assert _parts(url) == _parts(httpx.URL(url)), url


def test_random_urls_get_the_same_parts_with_or_without_the_shortcut() -> None:
    rng = random.Random(18)
    plain = list("aZ09.-_~!$&'()*+,;=:@/?") + ["%41", "%7e"]
    other = [*plain, *'#%[] "\u00e9', "/..", "/.", "//"]
    hosts = ["a.example", "A.example", "127.0.0.1", "1.2.3.999", "x_y.test", "a.example."]
    shortcut = 0
    for _ in range(3000):
        scheme = rng.choice(["http", "https", "HTTP", "ftp"])
        port = rng.choice(["", ":80", ":443", ":8080", ":0", ":65536", ":007"])
        pieces = rng.choice([plain, other])
        path = "/" + "".join(rng.choice(pieces) for _ in range(rng.randrange(12)))
        url = f"{scheme}://{rng.choice(hosts)}{port}{path}"
        try:
            parsed = httpx.URL(url)
        except httpx.InvalidURL:
            parsed = None
        assert _parts(url) == (_parts(parsed) if parsed is not None else _parts(url)), url
        if parsed is not None and _parts(url)[0] != "refused":
            shortcut += "url" not in vars(parse_target(url))
    assert shortcut > 150  # the comparison covered the shortcut often


# --- end to end through the Fetcher -----------------------------------------------

JPEG = jpeg_bytes(16, 12)


@pytest.fixture
def server() -> Iterator[ImageServer]:
    with ImageServer() as srv:
        srv.add_file("/a.jpg", JPEG)
        yield srv
        assert srv.errors == []


def _fetch(
    url: str,
    allowed: list[IPv4Network] | None = None,
    resolver: Resolver | None = None,
    transport: httpx.AsyncBaseTransport | None = None,
    **settings: Any,
) -> FetchOutcome:
    """Fetch with loopback allowed unless ``allowed`` says otherwise."""
    config = Settings(
        allowed_networks=LOOPBACK if allowed is None else allowed, retry_backoff_s=0, **settings
    )

    async def go() -> FetchOutcome:
        async with Fetcher(config, resolver=resolver, transport=transport) as fetcher:
            return await fetcher.fetch(FetchRequest(url))

    return asyncio.run(go())


def _reason(outcome: FetchOutcome) -> str:
    return outcome.reason if isinstance(outcome, Failed) else type(outcome).__name__


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost", "[::ffff:127.0.0.1]", "2130706433"])
def test_loopback_is_blocked_without_allow_list(server: ImageServer, host: str) -> None:
    # "localhost" and 2130706433 (== 127.0.0.1) go through the system resolver.
    outcome = _fetch(server.url("/a.jpg", host=host), allowed=[])
    assert _reason(outcome) == "blocked_address"
    assert server.requests_for("/a.jpg") == 0


@pytest.mark.parametrize("addresses", [["10.0.0.1"], ["127.0.0.1", "10.0.0.1"]])
def test_every_resolved_address_is_checked(server: ImageServer, addresses: list[str]) -> None:
    resolver = StaticResolver({"evil.test": addresses})
    assert _reason(_fetch(server.url("/a.jpg", host="evil.test"), resolver=resolver)) == (
        "blocked_address"
    )
    assert server.requests_for("/a.jpg") == 0


@pytest.mark.parametrize(
    "location", ["http://169.254.169.254/latest/meta-data/", "http://internal.test/admin"]
)
def test_redirect_to_a_blocked_address_is_refused(server: ImageServer, location: str) -> None:
    server.add_redirect("/r", location)
    resolver = StaticResolver({"cdn.test": ["127.0.0.1"], "internal.test": ["10.0.0.1"]})
    assert _reason(_fetch(server.url("/r", host="cdn.test"), resolver=resolver)) == (
        "blocked_address"
    )
    assert server.requests_for("/r") == 1


def test_connects_to_the_checked_address_with_the_original_host(server: ImageServer) -> None:
    class RebindingResolver(Resolver):
        """Answers loopback once, then a private address (DNS rebinding)."""

        calls = 0

        async def resolve(self, host: str, port: int) -> list[str]:
            self.calls += 1
            return ["127.0.0.1"] if self.calls == 1 else ["10.0.0.1"]

    resolver = RebindingResolver()
    outcome = _fetch(server.url("/a.jpg", host="cdn.test"), resolver=resolver)
    assert isinstance(outcome, Fetched)
    assert outcome.final_url == server.url("/a.jpg", host="cdn.test")
    assert resolver.calls == 1
    assert server.requests("/a.jpg")[0].headers["host"] == f"cdn.test:{server.port}"


def test_retry_moves_on_to_the_next_address(server: ImageServer) -> None:
    # Nothing listens on 127.0.0.2:<port>: the server is bound to 127.0.0.1 only.
    resolver = StaticResolver({"multi.test": ["127.0.0.2", "127.0.0.1"]})
    outcome = _fetch(server.url("/a.jpg", host="multi.test"), resolver=resolver, retries=1)
    assert _reason(outcome) == "Fetched"


@pytest.mark.parametrize("scheme", ["http", "https"])
def test_request_is_pinned_with_host_header_and_sni(scheme: str) -> None:
    seen: list[httpx.Request] = []

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, content=JPEG)

    url = f"{scheme}://img.example:8443/a.jpg"
    resolver = StaticResolver({"img.example": ["93.184.216.34"]})
    outcome = _fetch(url, resolver=resolver, transport=httpx.MockTransport(answer))
    assert isinstance(outcome, Fetched)
    assert outcome.final_url == url
    (request,) = seen
    assert str(request.url) == f"{scheme}://93.184.216.34:8443/a.jpg"
    assert request.headers["host"] == "img.example:8443"
    assert request.extensions.get("sni_hostname") == ("img.example" if scheme == "https" else None)


class _HangingResolver(Resolver):
    async def resolve(self, host: str, port: int) -> list[str]:
        await asyncio.sleep(30)
        return []


@pytest.mark.parametrize(
    ("url", "resolver", "reason"),
    [
        ("ftp://example.com/a.jpg", None, "invalid_url"),
        ("not a url", None, "invalid_url"),
        ("http:///a.jpg", None, "invalid_url"),
        ("http://nowhere.test/a.jpg", StaticResolver({}), "dns_error"),
        ("http://slow.test/a.jpg", _HangingResolver(), "dns_error"),
    ],
)
def test_bad_urls_and_names_fail_without_raising(
    url: str, resolver: Resolver | None, reason: str
) -> None:
    assert _reason(_fetch(url, resolver=resolver, connect_timeout_s=0.1)) == reason


def test_tls_is_verified_for_each_name_even_on_a_shared_address(tmp_path: Path) -> None:
    openssl = shutil.which("openssl") or pytest.skip("needs the openssl command")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        [openssl, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"]
        + ["-nodes", "-keyout", str(key), "-out", str(cert), "-days", "1", "-subj", "/CN=img.test"]
        + ["-addext", "subjectAltName=DNS:img.test"],
        check=True,
        capture_output=True,
    )
    server_context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_context.load_cert_chain(cert, key)
    client_context = ssl.create_default_context(cafile=str(cert))
    resolver = StaticResolver({"img.test": ["127.0.0.1"], "evil.test": ["127.0.0.1"]})

    with ImageServer(ssl_context=server_context) as server:
        server.add_file("/a.jpg", JPEG)

        async def go() -> list[FetchOutcome]:
            pools = SniPoolTransport(
                factory=lambda: httpx.AsyncHTTPTransport(verify=client_context)
            )
            settings = Settings(allowed_networks=LOOPBACK, retries=0)
            async with Fetcher(settings, resolver=resolver, transport=pools) as fetcher:
                hosts = ["img.test", "evil.test"]
                return [await fetcher.fetch(FetchRequest(server.url("/a.jpg", h))) for h in hosts]

        good, bad = asyncio.run(go())
    assert isinstance(good, Fetched) and good.content == JPEG
    # One IP-keyed pool would reuse the connection verified for img.test here.
    assert isinstance(bad, Failed)
    assert (bad.reason, "certificate" in bad.message) == ("connection_error", True)


def test_a_target_says_whether_its_url_carries_credentials() -> None:
    assert parse_target("http://alice:pa55@a.test/x.jpg").credentials
    assert parse_target("http://alice@a.test/x.jpg").credentials
    assert not parse_target("http://a.test/x.jpg").credentials  # the plain-URL fast path
    assert not parse_target("HTTP://A.test/x%20y.jpg?q=@").credentials
