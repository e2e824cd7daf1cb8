"""The lean revalidation path against real local servers, and against the full client.

Every answer a server may give to a conditional request is sent through both paths
(the Fetcher's default, and a Fetcher given an httpx transport, which sends its
conditional requests through httpx as before): the outcomes must be the same.
"""

from __future__ import annotations

import asyncio
import shutil
import ssl
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from ipaddress import ip_network
from pathlib import Path
from typing import Any

import pytest

from cartag.net.fetch import Fetcher
from cartag.net.guard import StaticResolver, parse_target
from cartag.net.outcomes import Failed, Fetched, FetchOutcome, FetchRequest, NotModified
from cartag.net.revalidate import Revalidator
from cartag.net.transport import SniPoolTransport
from cartag.settings import Settings
from tests.net.test_fetch import _free_port
from tests.support.http_server import ImageServer
from tests.support.images import jpeg_bytes

LOOPBACK = [ip_network("127.0.0.0/8"), ip_network("::1/128")]
JPEG = jpeg_bytes(16, 12)
HOSTS = StaticResolver({"a.test": ["127.0.0.1"]})


def _settings(**overrides: Any) -> Settings:
    defaults = {"connect_timeout_s": 1.0, "read_timeout_s": 1.0, "retry_backoff_s": 0.0}
    return Settings(**({"allowed_networks": LOOPBACK} | defaults | overrides))


@pytest.fixture
def server() -> Iterator[ImageServer]:
    with ImageServer() as srv:
        yield srv
        assert srv.errors == []


def _run(
    requests: list[FetchRequest],
    settings: Settings | None = None,
    *,
    lean: bool = True,
    concurrently: bool = False,
    revalidator: Callable[[Settings], Revalidator] | None = None,
) -> list[FetchOutcome]:
    """Fetch ``requests`` (in turn, or all at once) with one Fetcher of either path."""
    settings = settings or _settings()

    async def go() -> list[FetchOutcome]:
        if lean:
            made = revalidator(settings) if revalidator else None
            fetcher = Fetcher(settings, resolver=HOSTS, revalidator=made)
        else:
            fetcher = Fetcher(settings, resolver=HOSTS, transport=SniPoolTransport())
        async with fetcher:
            if concurrently:
                return await fetcher.fetch_many(requests)
            return [await fetcher.fetch(request) for request in requests]

    return asyncio.run(go())


def _summary(outcome: FetchOutcome) -> tuple[Any, ...]:
    if isinstance(outcome, Failed):
        return ("failed", outcome.reason)
    if isinstance(outcome, NotModified):
        return ("not_modified", outcome.url)
    return ("fetched", outcome.content, outcome.final_url, outcome.validators, outcome.content_type)


# --- the same outcomes as the full client ------------------------------------------------


def _raw(data: bytes, close: bool = False) -> Callable[[BaseHTTPRequestHandler], None]:
    """A route that writes ``data`` as the whole answer (status line included)."""

    def answer(handler: BaseHTTPRequestHandler) -> None:
        handler.wfile.write(data)
        handler.close_connection = close

    return answer


def _routes(server: ImageServer, case: str) -> tuple[str, dict[str, Any]]:
    """Set up ``case`` at /x.jpg (requested with ETag "v1"); return the path and settings."""
    data = b"y" * 5000
    path, settings = "/x.jpg", {}
    if case == "not_modified":
        server.add_file(path, JPEG, etag='"v1"')
    elif case == "changed":
        server.add_file(path, JPEG, etag='"v2"')
    elif case == "changed_chunked":
        server.add_file(path, JPEG, etag='"v2"', content_length=False)
    elif case == "changed_until_close":
        server.add_lying_length(path, JPEG)
    elif case == "lying_length":
        server.add_lying_length(path, data, claimed_length=10)
    elif case == "no_content":
        server.add_handler(path, _raw(b"HTTP/1.1 204 No Content\r\n\r\n"))
    elif case == "not_found":
        server.add_status(path, 404)
    elif case == "server_error_once":
        server.add_file(path, JPEG, etag='"v1"')
        server.add_status(path, 503, times=1)
    elif case == "server_error":
        server.add_status(path, 503)
    elif case == "redirect":
        server.add_file("/a.jpg", JPEG, etag='"v1"')
        server.add_redirect(path, "/a.jpg")
    elif case == "redirect_chunked":
        server.add_file("/a.jpg", JPEG, etag='"v1"')
        moved = b"HTTP/1.1 302 Found\r\nLocation: /a.jpg\r\nTransfer-Encoding: chunked\r\n\r\n"
        server.add_handler(path, _raw(moved + b"3\r\nabc\r\n0\r\n\r\n"))
    elif case == "redirect_loop":
        server.add_redirect(path, path)
        settings = {"max_redirects": 2}
    elif case == "redirect_elsewhere":
        server.add_redirect(path, "file:///etc/passwd")
    elif case == "gzip":
        server.add_file(path, JPEG, etag='"v2"', headers={"Content-Encoding": "gzip"})
    elif case == "too_large":
        server.add_file(path, data, etag='"v2"')
        settings = {"max_image_bytes": 1000}
    elif case == "too_large_chunked":
        server.add_chunked(path, data * 20, chunk_size=1024)
        settings = {"max_image_bytes": 1000}
    elif case == "slow_answer":
        server.add_slow(path, 5.0, JPEG, stall="headers")
        settings = {"read_timeout_s": 0.2, "retries": 1}
    elif case == "slow_body":
        server.add_slow(path, 5.0, JPEG, stall="body")
        settings = {"read_timeout_s": 0.2, "retries": 1}
    elif case == "no_answer":
        server.add_handler(path, _raw(b"", close=True))
    elif case == "close_after_304":
        server.add_handler(path, _raw(b"HTTP/1.1 304 Not Modified\r\nConnection: close\r\n\r\n"))
    elif case == "http10_304":
        server.add_handler(path, _raw(b"HTTP/1.0 304 Not Modified\r\n\r\n", close=True))
    elif case == "bare_line_feeds":
        server.add_handler(path, _raw(b'HTTP/1.1 304 Not Modified\nETag: "v1"\n\n'))
    elif case == "early_hints":
        hints = b"HTTP/1.1 103 Early Hints\r\nLink: </a.css>\r\n\r\n"
        server.add_handler(path, _raw(hints + b"HTTP/1.1 304 Not Modified\r\n\r\n"))
    elif case == "non_ascii_field":
        server.add_handler(path, _raw(b"HTTP/1.1 304 Not Modified\r\nX-Who: caf\xc3\xa9\r\n\r\n"))
    elif case == "bad_length":
        server.add_handler(path, _raw(b"HTTP/1.1 200 OK\r\nContent-Length: 1x\r\n\r\nab", True))
    elif case == "huge_head":
        big = b"X-Big: " + b"z" * 200_000 + b"\r\n"
        server.add_handler(path, _raw(b"HTTP/1.1 304 Not Modified\r\n" + big + b"\r\n"))
        settings = {"retries": 0}
    else:
        raise AssertionError(case)
    return path, settings


CASES = [
    "not_modified",
    "changed",
    "changed_chunked",
    "changed_until_close",
    "lying_length",
    "no_content",
    "not_found",
    "server_error_once",
    "server_error",
    "redirect",
    "redirect_chunked",
    "redirect_loop",
    "redirect_elsewhere",
    "gzip",
    "too_large",
    "too_large_chunked",
    "slow_answer",
    "slow_body",
    "no_answer",
    "close_after_304",
    "http10_304",
    "bare_line_feeds",
    "early_hints",
    "non_ascii_field",
    "bad_length",
    "huge_head",
]


@pytest.mark.parametrize("conditional", [True, False], ids=["conditional", "download"])
@pytest.mark.parametrize("case", CASES)
def test_every_answer_has_the_outcome_the_full_client_gives(
    server: ImageServer, case: str, conditional: bool
) -> None:
    outcomes = {}
    for lean in (True, False):
        path, overrides = _routes(server, case)  # again: some routes count down
        request = FetchRequest(server.url(path), etag='"v1"' if conditional else None)
        (outcomes[lean],) = _run([request], _settings(**overrides), lean=lean)
    assert _summary(outcomes[True]) == _summary(outcomes[False])


def test_the_outcomes_cover_every_kind_of_answer() -> None:
    # The table above is only worth as much as its spread: not all alike.
    kinds = set()
    for case in CASES:
        with ImageServer() as server:
            path, overrides = _routes(server, case)
            request = FetchRequest(server.url(path), etag='"v1"')
            (outcome,) = _run([request], _settings(**overrides))
        kinds.add(_summary(outcome)[0] if not isinstance(outcome, Failed) else outcome.reason)
    assert kinds >= {"not_modified", "fetched", "http_404", "http_503", "too_large", "timeout"}
    assert kinds >= {"connection_error", "too_many_redirects", "invalid_url"}


def test_connection_refused_is_a_connection_error() -> None:
    url = f"http://127.0.0.1:{_free_port()}/a.jpg"
    (outcome,) = _run([FetchRequest(url, etag='"v1"')], _settings(retries=1))
    assert isinstance(outcome, Failed) and outcome.reason == "connection_error"


# --- connections ----------------------------------------------------------------------


def test_revalidations_keep_one_connection(server: ImageServer) -> None:
    server.add_file("/a.jpg", JPEG, etag='"v1"')
    server.add_redirect("/old.jpg", "/a.jpg")
    server.add_file("/new.jpg", JPEG, etag='"v2"')
    requests = [FetchRequest(server.url("/a.jpg"), etag='"v1"')] * 20
    requests += [FetchRequest(server.url("/old.jpg"), etag='"v1"')] * 5
    requests += [FetchRequest(server.url("/new.jpg"), etag='"v1"')] * 5  # 200, with a length
    outcomes = _run(requests)
    assert [type(o) for o in outcomes] == [NotModified] * 25 + [Fetched] * 5
    assert all(isinstance(o, Fetched) and o.content == JPEG for o in outcomes[25:])
    assert server.connections == 1
    assert len(server.requests()) == 35  # each answered on the lean path: none asked twice


def test_downloads_share_the_lean_keep_alive_connections(server: ImageServer) -> None:
    for i in range(10):
        server.add_file(f"/{i}.jpg", JPEG, etag=f'"{i}"')
    requests = [FetchRequest(server.url(f"/{i}.jpg")) for i in range(10)]
    requests += [FetchRequest(server.url(f"/{i}.jpg"), etag=f'"{i}"') for i in range(10)]
    outcomes = _run(requests)
    assert [type(o) for o in outcomes] == [Fetched] * 10 + [NotModified] * 10
    assert all(isinstance(o, Fetched) and o.content == JPEG for o in outcomes[:10])
    assert server.connections == 1
    assert len(server.requests()) == 20  # none asked twice


def test_a_server_sending_unframed_images_gets_its_downloads_from_the_full_client(
    server: ImageServer,
) -> None:
    for i in range(3):
        server.add_file(f"/{i}.jpg", JPEG, etag=f'"{i}"', content_length=False)
    requests = [FetchRequest(server.url(f"/{i}.jpg")) for i in range(3)]
    requests.append(FetchRequest(server.url("/0.jpg"), etag='"0"'))
    outcomes = _run(requests)
    assert all(isinstance(o, Fetched) and o.content == JPEG for o in outcomes[:3])
    assert isinstance(outcomes[3], NotModified)
    # The first download was asked for twice (lean, then httpx); the next ones once,
    # and a revalidation still goes the lean way (a 304 has no body to frame).
    assert [len(server.requests(f"/{i}.jpg")) for i in range(3)] == [3, 1, 1]


@pytest.mark.parametrize("etag", ['"v1"', None], ids=["conditional", "download"])
def test_a_url_with_a_password_is_asked_with_basic_auth(
    server: ImageServer, etag: str | None
) -> None:
    server.add_file("/a.jpg", JPEG, etag='"v1"')
    url = server.url("/a.jpg").replace("http://", "http://alice:pa55@")
    (outcome,) = _run([FetchRequest(url, etag=etag)])
    assert isinstance(outcome, NotModified if etag else Fetched)
    (request,) = server.requests("/a.jpg")
    assert request.headers["authorization"] == "Basic YWxpY2U6cGE1NQ=="


def test_a_body_without_a_length_is_asked_for_again_by_the_full_client(
    server: ImageServer,
) -> None:
    server.add_file("/a.jpg", JPEG, etag='"v2"', content_length=False)
    (outcome,) = _run([FetchRequest(server.url("/a.jpg"), etag='"v1"')])
    assert isinstance(outcome, Fetched) and outcome.content == JPEG
    first, second = server.requests("/a.jpg")
    assert first.headers["if-none-match"] == second.headers["if-none-match"] == '"v1"'


def test_an_inventory_is_revalidated_without_image_bytes_on_few_connections(
    server: ImageServer,
) -> None:
    for i in range(60):
        server.add_file(f"/{i}.jpg", jpeg_bytes(8, 8, (i, 0, 0)), etag=f'"v{i}"')
    requests = [FetchRequest(server.url(f"/{i}.jpg"), etag=f'"v{i}"') for i in range(60)]
    settings = _settings(revalidate_per_host_concurrency=4)

    async def twice() -> list[list[FetchOutcome]]:
        async with Fetcher(settings) as fetcher:
            first = await fetcher.fetch_many(requests)
            opened = server.connections
            second = await fetcher.fetch_many(requests)
            assert server.connections == opened  # the second pass opened none
            return [first, second]

    for outcomes in asyncio.run(twice()):
        assert all(isinstance(o, NotModified) for o in outcomes)
    assert server.bytes_sent == 0
    assert server.connections <= 4
    assert server.max_concurrent <= 4


def test_connection_close_is_honoured(server: ImageServer) -> None:
    server.add_handler("/a.jpg", _raw(b"HTTP/1.1 304 Not Modified\r\nConnection: close\r\n\r\n"))
    outcomes = _run([FetchRequest(server.url("/a.jpg"), etag='"v1"')] * 3)
    assert all(isinstance(o, NotModified) for o in outcomes)
    assert server.connections == 3


def test_a_kept_connection_the_server_dropped_is_retried_once_on_a_new_one(
    server: ImageServer,
) -> None:
    # The server answers the first request of each connection and drops the
    # connection at the second, before answering: as a server whose keep-alive
    # timeout ends just as the request arrives.
    # Keyed by the handler itself, kept alive: an id() could be reused by a new one.
    seen: dict[BaseHTTPRequestHandler, int] = {}

    def first_only(handler: BaseHTTPRequestHandler) -> None:
        count = seen[handler] = seen.get(handler, 0) + 1
        if count == 1:
            handler.wfile.write(b"HTTP/1.1 304 Not Modified\r\nContent-Length: 0\r\n\r\n")
        else:
            handler.close_connection = True

    server.add_handler("/a.jpg", first_only)
    outcomes = _run([FetchRequest(server.url("/a.jpg"), etag='"v1"')] * 2, _settings(retries=0))
    assert all(isinstance(o, NotModified) for o in outcomes)
    assert server.connections == 2
    assert len(server.requests("/a.jpg")) == 3  # answered, dropped, answered


def test_idle_connections_expire(server: ImageServer) -> None:
    server.add_file("/a.jpg", JPEG, etag='"v1"')
    requests = [FetchRequest(server.url("/a.jpg"), etag='"v1"')] * 3
    outcomes = _run(requests, revalidator=lambda s: Revalidator(s, keepalive_s=0.0))
    assert all(isinstance(o, NotModified) for o in outcomes)
    assert server.connections == 3


# --- limits -------------------------------------------------------------------------


def test_revalidations_have_a_per_host_limit_of_their_own(server: ImageServer) -> None:
    def slow_304(handler: BaseHTTPRequestHandler) -> None:
        time.sleep(0.15)
        handler.wfile.write(b"HTTP/1.1 304 Not Modified\r\n\r\n")

    server.add_handler("/a.jpg", slow_304)
    settings = _settings(per_host_concurrency=1, revalidate_per_host_concurrency=3)
    requests = [FetchRequest(server.url("/a.jpg"), etag='"v1"')] * 9
    outcomes = _run(requests, settings, concurrently=True)
    assert all(isinstance(o, NotModified) for o in outcomes)
    assert server.max_concurrent == 3


def test_a_large_changed_image_arrives_whole(server: ImageServer) -> None:
    data = bytes(range(256)) * (12 * 1024)  # 3 MiB: reading pauses and resumes
    server.add_file("/big.jpg", data, etag='"v2"')
    (outcome,) = _run([FetchRequest(server.url("/big.jpg"), etag='"v1"')])
    assert isinstance(outcome, Fetched) and outcome.content == data


def test_a_request_that_cannot_be_sent_as_is_is_left_to_the_full_client() -> None:
    async def go() -> object:
        revalidator = Revalidator(_settings())
        target = parse_target("http://127.0.0.1:9/a.jpg")
        return await revalidator.send(target, "127.0.0.1", {"If-None-Match": "x\r\nEvil: 1"})

    assert asyncio.run(go()) is None  # nothing was sent: port 9 would have refused


# --- addresses and TLS ----------------------------------------------------------------------


def test_ipv6_literal_hosts() -> None:
    with ImageServer(host="::1") as server:
        server.add_file("/a.jpg", JPEG, etag='"v1"')
        url = server.url("/a.jpg")
        assert url.startswith("http://[::1]:")
        outcomes = _run([FetchRequest(url, etag='"v1"')] * 3)
        assert all(o == NotModified(url=url) for o in outcomes)
        assert server.connections == 1
        assert server.requests()[0].headers["host"] == f"[::1]:{server.port}"
        assert server.errors == []


@dataclass
class _Tls:
    server: ssl.SSLContext
    client: ssl.SSLContext
    names: list[str] = field(default_factory=lambda: ["img.test"])


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> _Tls:
    openssl = shutil.which("openssl") or pytest.skip("needs the openssl command")
    folder: Path = tmp_path_factory.mktemp("tls")
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(
        [openssl, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"]
        + ["-nodes", "-keyout", str(key), "-out", str(cert), "-days", "1", "-subj", "/CN=img.test"]
        + ["-addext", "subjectAltName=DNS:img.test"],
        check=True,
        capture_output=True,
    )
    server_context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_context.load_cert_chain(cert, key)
    return _Tls(server_context, ssl.create_default_context(cafile=str(cert)))


def test_tls_is_verified_for_each_name_on_a_shared_address(tls: _Tls) -> None:
    resolver = StaticResolver({"img.test": ["127.0.0.1"], "evil.test": ["127.0.0.1"]})
    with ImageServer(ssl_context=tls.server) as server:
        server.add_file("/a.jpg", JPEG, etag='"v1"')
        hosts = ["img.test", "img.test", "evil.test", "img.test"]
        requests = [FetchRequest(server.url("/a.jpg", host), etag='"v1"') for host in hosts]

        async def go() -> list[FetchOutcome]:
            revalidator = Revalidator(_settings(), ssl_context=tls.client)
            settings = _settings(retries=0)
            async with Fetcher(settings, resolver=resolver, revalidator=revalidator) as fetcher:
                return [await fetcher.fetch(request) for request in requests]

        outcomes = asyncio.run(go())
        # The connection verified for img.test is kept for img.test, never lent to evil.test.
        assert [type(o) for o in outcomes] == [NotModified, NotModified, Failed, NotModified]
        bad = outcomes[2]
        assert isinstance(bad, Failed) and bad.reason == "connection_error"
        assert "certificate" in bad.message
        assert server.connections == 2
        assert [r.headers["host"] for r in server.requests()] == [f"img.test:{server.port}"] * 3


def test_closing_the_fetcher_closes_idle_connections(server: ImageServer) -> None:
    server.add_file("/a.jpg", JPEG, etag='"v1"')
    closed = threading.Event()

    def watch(handler: BaseHTTPRequestHandler) -> None:
        handler.wfile.write(b"HTTP/1.1 304 Not Modified\r\n\r\n")
        handler.connection.settimeout(5)
        if handler.rfile.read(1) == b"":  # the client closed its end
            closed.set()
        handler.close_connection = True

    server.add_handler("/a.jpg", watch)
    (outcome,) = _run([FetchRequest(server.url("/a.jpg"), etag='"v1"')])
    assert isinstance(outcome, NotModified)
    assert closed.wait(5)
