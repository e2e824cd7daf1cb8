"""The download layer against a real local HTTP server."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from http.server import BaseHTTPRequestHandler
from ipaddress import ip_network
from typing import Any, TypeVar

import httpx
import pytest

from cartag.errors import FetchError
from cartag.net.fetch import Fetcher
from cartag.net.guard import StaticResolver, SystemResolver
from cartag.net.outcomes import Failed, Fetched, FetchOutcome, FetchRequest, NotModified, Validators
from cartag.settings import Settings
from tests.support.http_server import DEFAULT_LAST_MODIFIED, ImageServer
from tests.support.images import jpeg_bytes

T = TypeVar("T")
LOOPBACK = [ip_network("127.0.0.0/8")]
JPEG = jpeg_bytes(16, 12)
HOSTS = StaticResolver({name: ["127.0.0.1"] for name in ("a.test", "b.test", "c.test")})


def _settings(**overrides: Any) -> Settings:
    """Loopback allowed (the server is on 127.0.0.1), short timeouts, no backoff."""
    defaults = {"connect_timeout_s": 1.0, "read_timeout_s": 1.0, "retry_backoff_s": 0.0}
    return Settings(**({"allowed_networks": LOOPBACK} | defaults | overrides))


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _use(action: Callable[[Fetcher], Awaitable[T]], settings: Settings | None = None) -> T:
    """Run ``action`` with a fresh Fetcher (loopback allowed, resolving *.test to it)."""

    async def go() -> T:
        async with Fetcher(settings or _settings(), resolver=HOSTS) as fetcher:
            return await action(fetcher)

    return asyncio.run(go())


def _fetch(url: str, settings: Settings | None = None, **request: str) -> FetchOutcome:
    return _use(lambda fetcher: fetcher.fetch(FetchRequest(url, **request)), settings)


def _fetch_counting(url: str, settings: Settings | None = None) -> tuple[FetchOutcome, int]:
    """Fetch ``url``; also return how many body bytes the Fetcher received."""

    async def action(fetcher: Fetcher) -> tuple[FetchOutcome, int]:
        return await fetcher.fetch(FetchRequest(url)), fetcher.bytes_downloaded

    return _use(action, settings)


def _failed(outcome: FetchOutcome) -> Failed:
    assert isinstance(outcome, Failed), outcome
    return outcome


def _fetched(outcome: FetchOutcome) -> Fetched:
    assert isinstance(outcome, Fetched), outcome
    return outcome


@pytest.fixture
def server() -> Iterator[ImageServer]:
    with ImageServer() as srv:
        yield srv
        assert srv.errors == []


# --- plain downloads ---------------------------------------------------------------


def test_fetch_returns_body_validators_and_content_type(server: ImageServer) -> None:
    server.add_file("/a.jpg", JPEG, etag='"v1"')
    result = _fetched(_fetch(server.url("/a.jpg")))
    assert result.content == JPEG
    assert result.url == result.final_url == server.url("/a.jpg")
    assert result.validators == Validators('"v1"', DEFAULT_LAST_MODIFIED, len(JPEG))
    assert result.content_type == "image/jpeg"


def test_missing_validators_are_none(server: ImageServer) -> None:
    server.add_file("/a.jpg", JPEG, etag=False, last_modified=False, content_length=False)
    result = _fetched(_fetch(server.url("/a.jpg")))
    assert result.content == JPEG
    assert result.validators == Validators(None, None, None)


def test_sends_user_agent_and_asks_for_uncompressed_bodies(server: ImageServer) -> None:
    server.add_file("/a.jpg", JPEG)
    _fetched(_fetch(server.url("/a.jpg"), _settings(user_agent="cartag-test/9")))
    (request,) = server.requests("/a.jpg")
    assert request.headers["user-agent"] == "cartag-test/9"
    assert request.headers["accept-encoding"] == "identity"
    assert "if-none-match" not in request.headers


def test_compressed_body_is_refused(server: ImageServer) -> None:
    server.add_file("/a.jpg", b"\x1f\x8b not really gzip", headers={"Content-Encoding": "gzip"})
    assert _failed(_fetch(server.url("/a.jpg"))).reason == "unsupported_encoding"


def test_cookies_are_not_kept_between_requests(server: ImageServer) -> None:
    server.add_file("/a.jpg", JPEG, headers={"Set-Cookie": "session=secret; Path=/"})

    async def twice(fetcher: Fetcher) -> list[FetchOutcome]:
        return [await fetcher.fetch(FetchRequest(server.url("/a.jpg"))) for _ in range(2)]

    assert all(isinstance(outcome, Fetched) for outcome in _use(twice))
    assert all("cookie" not in r.headers for r in server.requests("/a.jpg"))


def test_bytes_downloaded_counts_bodies(server: ImageServer) -> None:
    server.add_file("/a.jpg", JPEG)

    async def three(fetcher: Fetcher) -> int:
        for path in ("/a.jpg", "/missing.jpg", "/a.jpg"):
            await fetcher.fetch(FetchRequest(server.url(path)))
        return fetcher.bytes_downloaded

    assert _use(three) == 2 * len(JPEG)


def test_fetch_many_keeps_input_order(server: ImageServer) -> None:
    red, blue = jpeg_bytes(8, 8, (255, 0, 0)), jpeg_bytes(8, 8, (0, 0, 255))
    server.add_file("/red.jpg", red)
    server.add_file("/blue.jpg", blue)
    requests = [
        FetchRequest(server.url("/red.jpg")),
        FetchRequest(server.url("/missing.jpg")),
        FetchRequest("gopher://example.com/"),
        FetchRequest(server.url("/blue.jpg")),
    ]

    outcomes = _use(lambda fetcher: fetcher.fetch_many(requests))
    assert [o.url for o in outcomes] == [r.url for r in requests]
    assert _fetched(outcomes[0]).content == red
    assert _failed(outcomes[1]).reason == "http_404"
    assert _failed(outcomes[2]).reason == "invalid_url"
    assert _fetched(outcomes[3]).content == blue


# --- conditional requests ----------------------------------------------------------


def test_matching_etag_gives_not_modified_without_body(server: ImageServer) -> None:
    server.add_file("/a.jpg", JPEG, etag='"v1"')

    outcome = _fetch(server.url("/a.jpg"), etag='"v1"')
    assert outcome == NotModified(url=server.url("/a.jpg"))
    assert server.bytes_sent == 0
    assert server.requests("/a.jpg")[0].headers["if-none-match"] == '"v1"'


def test_revalidations_and_redirects_keep_their_connection(server: ImageServer) -> None:
    server.add_file("/a.jpg", JPEG, etag='"v1"')
    server.add_redirect("/old.jpg", "/a.jpg")
    requests = [FetchRequest(server.url("/a.jpg"), etag='"v1"') for _ in range(20)]
    requests += [FetchRequest(server.url("/old.jpg"), etag='"v1"') for _ in range(5)]

    async def sequentially() -> list[FetchOutcome]:
        async with Fetcher(_settings()) as fetcher:
            return [await fetcher.fetch(request) for request in requests]

    outcomes = asyncio.run(sequentially())
    assert all(isinstance(outcome, NotModified) for outcome in outcomes)
    # One keep-alive connection for all 30 exchanges: a 304 or a redirect left
    # unread would close its connection and the next request would open another.
    assert server.connections == 1


def test_last_modified_gives_not_modified(server: ImageServer) -> None:
    server.add_file("/a.jpg", JPEG, etag=False)
    outcome = _fetch(server.url("/a.jpg"), last_modified=DEFAULT_LAST_MODIFIED)
    assert isinstance(outcome, NotModified)
    assert server.requests("/a.jpg")[0].headers["if-modified-since"] == DEFAULT_LAST_MODIFIED


def test_stale_validators_download_the_new_version(server: ImageServer) -> None:
    server.add_file("/a.jpg", JPEG, etag='"v2"')
    result = _fetched(
        _fetch(server.url("/a.jpg"), etag='"v1"', last_modified=DEFAULT_LAST_MODIFIED)
    )
    assert result.content == JPEG
    assert result.validators.etag == '"v2"'


def test_unsendable_validators_are_dropped(server: ImageServer) -> None:
    server.add_file("/a.jpg", JPEG)
    result = _fetch(server.url("/a.jpg"), etag='"caf\u00e9"', last_modified="x\r\nX-Evil: 1")
    assert _fetched(result).content == JPEG
    (request,) = server.requests("/a.jpg")
    assert "if-none-match" not in request.headers
    assert "if-modified-since" not in request.headers
    assert "x-evil" not in request.headers


# --- size limit ----------------------------------------------------------------------


@pytest.mark.parametrize("claimed", [None, 10])
def test_bodies_within_the_limit_are_accepted(server: ImageServer, claimed: int | None) -> None:
    if claimed is None:
        server.add_file("/a.jpg", b"x" * 1000)  # exactly the limit
    else:  # an HTTP/1.1 client never reads past the declared length
        server.add_lying_length("/a.jpg", b"x" * 50_000, claimed_length=claimed)
    outcome = _fetch(server.url("/a.jpg"), _settings(max_image_bytes=1000))
    assert _fetched(outcome).content == b"x" * (claimed or 1000)


def test_declared_length_over_limit_is_refused_before_reading(server: ImageServer) -> None:
    server.add_file("/big.jpg", b"x" * 5000)
    outcome, downloaded = _fetch_counting(server.url("/big.jpg"), _settings(max_image_bytes=1000))
    assert _failed(outcome).reason == "too_large"
    assert downloaded == 0
    assert server.requests_for("/big.jpg") == 1  # not retried


@pytest.mark.parametrize("route", ["chunked", "until_close"])
def test_streamed_body_over_limit_is_cut_off(server: ImageServer, route: str) -> None:
    data = b"x" * 400_000
    if route == "chunked":
        server.add_chunked("/big.jpg", data, chunk_size=1024)
    else:
        server.add_lying_length("/big.jpg", data)  # no Content-Length, ends at close
    outcome, downloaded = _fetch_counting(server.url("/big.jpg"), _settings(max_image_bytes=1000))
    assert _failed(outcome).reason == "too_large"
    assert 1000 < downloaded < len(data)


# --- timeouts, retries and connection errors ---------------------------------------


def test_read_timeout_before_the_answer_is_retried(server: ImageServer) -> None:
    server.add_slow("/slow.jpg", 5.0, JPEG, stall="headers")
    outcome = _fetch(server.url("/slow.jpg"), _settings(read_timeout_s=0.2, retries=1))
    assert _failed(outcome).reason == "timeout"
    assert server.requests_for("/slow.jpg") == 2


def test_read_timeout_in_the_body_is_not_retried(server: ImageServer) -> None:
    # A server that answered, then stalled its body, would only stall it again.
    server.add_slow("/slow.jpg", 5.0, JPEG, stall="body")
    outcome = _fetch(server.url("/slow.jpg"), _settings(read_timeout_s=0.2, retries=2))
    assert _failed(outcome).reason == "timeout"
    assert server.requests_for("/slow.jpg") == 1


def _trickle(handler: BaseHTTPRequestHandler, interval_s: float = 0.05) -> None:
    """Answer at once, then send a byte every ``interval_s`` (each read well within its timeout)."""
    handler.send_response(200)
    handler.send_header("Content-Length", "1000")
    handler.end_headers()
    for _ in range(1000):
        handler.wfile.write(b"x")
        handler.wfile.flush()
        time.sleep(interval_s)


def test_trickling_body_gets_one_attempt_within_the_download_deadline(
    server: ImageServer,
) -> None:
    server.add_handler("/drip.jpg", _trickle)
    settings = _settings(read_timeout_s=1.0, retries=2, download_deadline_s=0.5)
    started = time.monotonic()
    outcome = _fetch(server.url("/drip.jpg"), settings)
    assert _failed(outcome).reason == "timeout"
    assert time.monotonic() - started < 1.2  # before: 3 attempts of 1 + 4 x 1 s each
    assert server.requests_for("/drip.jpg") == 1


def test_download_deadline_covers_all_attempts(server: ImageServer) -> None:
    server.add_slow("/slow.jpg", 5.0, JPEG, stall="headers")
    settings = _settings(read_timeout_s=0.3, retries=5, download_deadline_s=0.8)
    started = time.monotonic()
    outcome = _fetch(server.url("/slow.jpg"), settings)
    assert _failed(outcome).reason == "timeout"
    assert time.monotonic() - started < 1.3  # before: 6 attempts of 0.3 s
    assert server.requests_for("/slow.jpg") == 3  # 0.3 + 0.3 + the 0.2 s left


def test_trickling_server_hits_the_overall_deadline(server: ImageServer) -> None:
    def trickle(handler: BaseHTTPRequestHandler) -> None:
        handler.send_response(200)
        handler.send_header("Content-Length", "1000")
        handler.end_headers()
        for _ in range(60):  # one byte per 0.1 s: each read is well within its timeout
            handler.wfile.write(b"x")
            handler.wfile.flush()
            time.sleep(0.1)

    server.add_handler("/trickle.jpg", trickle)
    started = time.monotonic()
    settings = _settings(connect_timeout_s=0.1, read_timeout_s=0.3, retries=0)
    outcome = _fetch(server.url("/trickle.jpg"), settings)
    assert _failed(outcome).reason == "timeout"
    assert time.monotonic() - started < 3.0


def test_connect_timeout() -> None:
    # A listener with a full accept queue: the kernel drops further SYNs.
    with contextlib.ExitStack() as stack:
        listener = stack.enter_context(socket.create_server(("127.0.0.1", 0), backlog=0))
        port = listener.getsockname()[1]
        for filler in [stack.enter_context(socket.socket()) for _ in range(4)]:
            filler.setblocking(False)
            filler.connect_ex(("127.0.0.1", port))
        time.sleep(0.05)
        outcome = _fetch(f"http://127.0.0.1:{port}/a.jpg", _settings(connect_timeout_s=0.2))
    assert _failed(outcome).reason == "timeout"


@pytest.mark.parametrize(("failures", "retries"), [(2, 2), (3, 2), (1, 0)])
def test_5xx_is_retried(server: ImageServer, failures: int, retries: int) -> None:
    server.add_file("/a.jpg", JPEG)
    server.add_status("/a.jpg", 502, times=failures)
    outcome = _fetch(server.url("/a.jpg"), _settings(retries=retries))
    if failures <= retries:
        assert _fetched(outcome).content == JPEG
    else:
        assert _failed(outcome).reason == "http_502"
    assert server.requests_for("/a.jpg") == min(failures, retries) + 1


@pytest.mark.parametrize("status", [400, 403, 404, 410, 429])
def test_4xx_is_never_retried(server: ImageServer, status: int) -> None:
    server.add_status("/a.jpg", status)
    assert _failed(_fetch(server.url("/a.jpg"), _settings(retries=3))).reason == f"http_{status}"
    assert server.requests_for("/a.jpg") == 1


def test_retries_back_off_exponentially(server: ImageServer) -> None:
    server.add_status("/a.jpg", 503)
    started = time.monotonic()
    _failed(_fetch(server.url("/a.jpg"), _settings(retries=2, retry_backoff_s=0.1)))
    assert time.monotonic() - started >= 0.1 + 0.2
    assert server.requests_for("/a.jpg") == 3


def test_connection_refused_is_connection_error() -> None:
    outcome = _fetch(f"http://127.0.0.1:{_free_port()}/a.jpg", _settings(retries=1))
    assert _failed(outcome).reason == "connection_error"


# --- redirects -----------------------------------------------------------------------


@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
def test_redirects_are_followed(server: ImageServer, status: int) -> None:
    server.add_file("/img/a.jpg", JPEG)
    server.add_redirect("/img/r2", "a.jpg", status=status)  # relative
    server.add_redirect("/r1", server.url("/img/r2"), status=status)  # absolute
    result = _fetched(_fetch(server.url("/r1")))
    assert result.url == server.url("/r1")
    assert result.final_url == server.url("/img/a.jpg")
    assert result.content == JPEG


def test_redirect_limit(server: ImageServer) -> None:
    server.add_file("/a.jpg", JPEG)
    server.add_redirect("/r1", "/r2")
    server.add_redirect("/r2", "/r3")
    server.add_redirect("/r3", "/a.jpg")
    assert _fetched(_fetch(server.url("/r1"), _settings(max_redirects=3))).content == JPEG
    outcome = _fetch(server.url("/r1"), _settings(max_redirects=2))
    assert _failed(outcome).reason == "too_many_redirects"
    assert _failed(_fetch(server.url("/r3"), _settings(max_redirects=0))).reason == (
        "too_many_redirects"
    )


def test_redirect_loop_stops(server: ImageServer) -> None:
    server.add_redirect("/loop", "/loop")
    outcome = _fetch(server.url("/loop"), _settings(max_redirects=4))
    assert _failed(outcome).reason == "too_many_redirects"
    assert server.requests_for("/loop") == 5


def test_redirect_to_other_scheme_is_invalid_url(server: ImageServer) -> None:
    server.add_redirect("/r", "file:///etc/passwd")
    assert _failed(_fetch(server.url("/r"))).reason == "invalid_url"


# --- concurrency -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("hosts", "per_host", "overall", "expected"),
    [
        (["a.test"], 2, 10, 2),
        (["a.test", "b.test"], 2, 10, 2),
        (["a.test", "b.test", "c.test"], 10, 3, 3),
    ],
    ids=["per-host-limit", "names-of-one-address-share-it", "overall-limit"],
)
def test_concurrency_limits(
    server: ImageServer, hosts: list[str], per_host: int, overall: int, expected: int
) -> None:
    server.add_slow("/slow.jpg", 0.15, JPEG)
    requests = [FetchRequest(server.url("/slow.jpg", host=h)) for h in hosts] * 4
    settings = _settings(per_host_concurrency=per_host, download_concurrency=overall)
    outcomes = _use(lambda fetcher: fetcher.fetch_many(requests), settings)
    assert all(isinstance(o, Fetched) for o in outcomes)
    assert server.max_concurrent == expected


def test_per_host_limit_is_per_address() -> None:
    # Bound to every address so that 127.0.0.2 reaches it too.
    with ImageServer(host="0.0.0.0") as server:
        server.add_slow("/slow.jpg", 0.15, JPEG)
        resolver = StaticResolver({"a.test": ["127.0.0.1"], "b.test": ["127.0.0.2"]})
        requests = [FetchRequest(server.url("/slow.jpg", host=h)) for h in ("a.test", "b.test")]
        settings = _settings(per_host_concurrency=2, download_concurrency=10)

        async def go() -> list[FetchOutcome]:
            async with Fetcher(settings, resolver=resolver) as fetcher:
                return await fetcher.fetch_many(requests * 4)

        assert all(isinstance(o, Fetched) for o in asyncio.run(go()))
        assert server.max_concurrent == 4
        assert server.errors == []


def test_per_host_limit_keys_on_the_resolved_address(server: ImageServer) -> None:
    # Four spellings of 127.0.0.1, resolved by the system resolver: one server.
    server.add_slow("/slow.jpg", 0.15, JPEG)
    spellings = ["127.0.0.1", "2130706433", "0x7f000001", "127.1"]
    requests = [FetchRequest(f"http://{h}:{server.port}/slow.jpg") for h in spellings] * 2
    settings = _settings(per_host_concurrency=1, download_concurrency=10)

    async def go() -> list[FetchOutcome]:
        async with Fetcher(settings, resolver=SystemResolver()) as fetcher:
            return await fetcher.fetch_many(requests)

    outcomes = asyncio.run(go())
    assert all(isinstance(o, Fetched) for o in outcomes), outcomes
    assert server.max_concurrent == 1


class _Drip(httpx.AsyncByteStream):
    """A body of ``size`` bytes sent one byte every ``interval_s``."""

    def __init__(self, size: int, interval_s: float) -> None:
        self._size, self._interval_s = size, interval_s

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for _ in range(self._size):
            await asyncio.sleep(self._interval_s)
            yield b"x"


def test_revalidation_is_not_queued_behind_slow_downloads() -> None:
    # Every download slot, overall and for the host, is held by a dripping body;
    # the conditional request for a cached image must not wait for them.
    in_flight: list[str] = []

    async def handler(request: httpx.Request) -> httpx.Response:
        if request.headers.get("if-none-match") == '"v1"':
            return httpx.Response(304)
        in_flight.append(request.url.path)
        return httpx.Response(200, headers={"Content-Length": "1000"}, stream=_Drip(1000, 0.05))

    settings = _settings(
        allowed_networks=[],
        download_concurrency=2,
        per_host_concurrency=2,
        read_timeout_s=1.0,
        download_deadline_s=1.5,
    )
    resolver = StaticResolver({"cdn.example": ["93.184.216.34"]})

    async def go() -> tuple[FetchOutcome, float, list[FetchOutcome]]:
        transport = httpx.MockTransport(handler)
        async with Fetcher(settings, transport=transport, resolver=resolver) as fetcher:
            slow = asyncio.gather(
                *(fetcher.fetch(FetchRequest(f"http://cdn.example/{i}.jpg")) for i in range(3))
            )
            while len(in_flight) < 2:
                await asyncio.sleep(0.01)
            started = time.monotonic()
            cached = await fetcher.fetch(FetchRequest("http://cdn.example/c.jpg", etag='"v1"'))
            waited = time.monotonic() - started
            assert in_flight == ["/0.jpg", "/1.jpg"]  # the third download waits for a slot
            return cached, waited, await slow

    cached, waited, slow = asyncio.run(go())
    assert isinstance(cached, NotModified)
    assert waited < 0.5  # before: until a dripping download gave up its slot
    assert [_failed(o).reason for o in slow] == ["timeout"] * 3


# --- callbacks -------------------------------------------------------------------------


def test_post_json_delivers_payload(server: ImageServer) -> None:
    server.add_json_sink("/hook")
    assert _use(lambda fetcher: fetcher.post_json(server.url("/hook"), {"job": "j1"})) == 200
    assert server.received("/hook") == [{"job": "j1"}]
    assert server.requests("/hook")[0].headers["content-type"] == "application/json"


def test_post_json_returns_error_status_without_retrying(server: ImageServer) -> None:
    server.add_json_sink("/hook")
    server.add_status("/hook", 500)
    assert _use(lambda fetcher: fetcher.post_json(server.url("/hook"), {})) == 500
    assert server.requests_for("/hook") == 1


def test_post_json_is_guarded(server: ImageServer) -> None:
    server.add_json_sink("/hook")
    cases = [
        (server.url("/hook"), _settings(allowed_networks=[]), "blocked_address"),
        ("ftp://example.com/hook", None, "invalid_url"),
        (f"http://127.0.0.1:{_free_port()}/hook", None, "connection_error"),
    ]
    for url, settings, reason in cases:
        with pytest.raises(FetchError) as info:
            _use(lambda fetcher, url=url: fetcher.post_json(url, {}), settings)  # type: ignore[misc]
        assert info.value.reason == reason
    assert isinstance(info.value, FetchError)
    assert server.received("/hook") == []
