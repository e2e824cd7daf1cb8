"""A real, threaded HTTP/1.1 server on 127.0.0.1 for download and end-to-end tests.

:class:`ImageServer` serves canned routes (files, redirects, error statuses,
slow and misbehaving bodies, a JSON sink for callbacks) and counts what it did.
It binds an ephemeral port, serves from a daemon thread, and is quiet: no log
lines, client disconnects ignored, other exceptions kept in ``.errors``.

Usage as a fixture::

    @pytest.fixture
    def server() -> Iterator[ImageServer]:
        with ImageServer() as srv:
            yield srv

    def test_x(server: ImageServer) -> None:
        server.add_file("/a.jpg", jpeg)
        server.url("/a.jpg")                   # http://127.0.0.1:<port>/a.jpg
        server.url("/a.jpg", host="cdn.test")  # pair with a StaticResolver

Fetching from it needs ``Settings(allowed_networks=[ip_network("127.0.0.0/8")])``:
the SSRF guard blocks loopback by default.
"""

from __future__ import annotations

import functools
import hashlib
import json
import socket
import socketserver
import ssl
import sys
import threading
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Literal
from urllib.parse import urlsplit

DEFAULT_LAST_MODIFIED = "Wed, 21 Oct 2015 07:28:00 GMT"
_PIECE = 64 * 1024
# The client hung up or (TLS) refused the certificate: expected, not an error.
_DISCONNECTS = (ConnectionError, TimeoutError, ssl.SSLError)

_Route = Callable[["_RequestHandler", bytes], None]
_TEXT, _JPEG = {"Content-Type": "text/plain"}, {"Content-Type": "image/jpeg"}


@dataclass(frozen=True)
class RecordedRequest:
    """One request as received: method, path with query, lower-case headers, body."""

    method: str
    path: str
    headers: dict[str, str]
    body: bytes


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128
    owner: ImageServer
    ssl_context: ssl.SSLContext | None = None

    def get_request(self) -> tuple[socket.socket, Any]:
        sock, address = self.socket.accept()
        self.owner._connected()
        if self.ssl_context is not None:
            # The handshake happens on first read, in the handler thread, so a
            # client that never completes it cannot stall the accept loop.
            sock = self.ssl_context.wrap_socket(sock, True, do_handshake_on_connect=False)
        return sock, address

    def server_bind(self) -> None:
        # HTTPServer.server_bind calls getfqdn(), a reverse DNS lookup: skip it.
        socketserver.TCPServer.server_bind(self)
        self.server_name = str(self.server_address[0])
        self.server_port = int(self.server_address[1])

    def handle_error(self, request: Any, client_address: Any) -> None:
        # Runs inside the except block; the default prints a traceback to stderr.
        exc = sys.exc_info()[1]
        if exc is not None and not isinstance(exc, _DISCONNECTS):
            self.owner.errors.append(exc)


class _Server6(_Server):
    address_family = socket.AF_INET6


class _RequestHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, like real image servers
    server: _Server
    timeout = 30  # idle keep-alive connections of abandoned clients end eventually
    # Headers and body are separate writes; with Nagle on, the body would wait
    # for the client's delayed ACK (about 40 ms per response).
    disable_nagle_algorithm = True

    def log_message(self, format: str, *args: Any) -> None:
        """Silence the per-request log line on stderr."""

    def do_GET(self) -> None:
        self.server.owner._dispatch(self)

    do_POST = do_PUT = do_DELETE = do_GET

    def respond(self, status: int, data: bytes | None, headers: dict[str, str]) -> None:
        """Send status and headers, then ``data`` (``None``: no length, body follows)."""
        self.send_response(status)
        length = {} if data is None else {"Content-Length": str(len(data))}
        for name, value in (length | headers).items():
            self.send_header(name, value)
        self.end_headers()
        self.write(data or b"")

    def write(self, data: bytes) -> None:
        """Write body bytes, in pieces so bytes_sent shows how far a quitter got."""
        for start in range(0, len(data), _PIECE):
            piece = data[start : start + _PIECE]
            self.wfile.write(piece)
            self.server.owner._count(len(piece))

    def write_chunked(self, data: bytes, chunk_size: int, headers: dict[str, str]) -> None:
        """Send ``data`` with ``Transfer-Encoding: chunked``."""
        self.respond(200, None, headers | {"Transfer-Encoding": "chunked"})
        for start in range(0, len(data), chunk_size):
            piece = data[start : start + chunk_size]
            self.wfile.write(f"{len(piece):x}\r\n".encode() + piece + b"\r\n")
            self.server.owner._count(len(piece))
        self.wfile.write(b"0\r\n\r\n")


class ImageServer:
    """A local HTTP server with registrable routes and counters (thread-safe).

    Routes are keyed by path without query; registering a path again replaces
    its route. Unknown paths answer 404.

    Args:
        host: Address to bind (IPv4, or IPv6 such as ``"::1"``); the port is ephemeral.
        ssl_context: A server-side context makes it serve HTTPS.

    Attributes:
        bytes_sent: Response body bytes written to sockets, all routes.
        max_concurrent: Most requests in progress at once since the last reset.
        connections: TCP connections accepted since the last reset.
        errors: Unexpected exceptions raised while serving (should stay empty).
    """

    def __init__(self, host: str = "127.0.0.1", ssl_context: ssl.SSLContext | None = None) -> None:
        server_class = _Server6 if ":" in host else _Server
        self._server = server_class((host, 0), _RequestHandler)
        self._server.ssl_context = ssl_context
        self._server.owner = self
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._routes: dict[str, _Route] = {}
        self._statuses: dict[str, list[int | None]] = {}  # path -> [status, times left]
        self._received: dict[str, list[Any]] = {}
        self._requests: list[RecordedRequest] = []
        self._counts: Counter[str] = Counter()
        self._active = 0
        self.bytes_sent = 0
        self.max_concurrent = 0
        self.connections = 0
        self.errors: list[BaseException] = []

    @property
    def port(self) -> int:
        """The bound (ephemeral) port."""
        return int(self._server.server_address[1])

    def url(self, path: str, host: str | None = None) -> str:
        """The URL of ``path``; ``host`` replaces the bound address in it."""
        scheme = "http" if self._server.ssl_context is None else "https"
        host = host or self._server.server_name
        if ":" in host and not host.startswith("["):
            host = f"[{host}]"  # an IPv6 address
        return f"{scheme}://{host}:{self.port}{path}"

    def start(self) -> ImageServer:
        """Serve in a background thread (idempotent)."""
        if self._thread is None:
            serve = functools.partial(self._server.serve_forever, poll_interval=0.01)
            self._thread = threading.Thread(target=serve, daemon=True)
            self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and close the listening socket; slow routes are cut short."""
        self._stopping.set()
        if self._thread is not None:
            self._server.shutdown()
            self._thread.join()
            self._thread = None
        self._server.server_close()

    def __enter__(self) -> ImageServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def add_file(
        self,
        path: str,
        data: bytes,
        content_type: str = "image/jpeg",
        etag: bool | str = True,
        last_modified: bool | str = True,
        content_length: bool = True,
        headers: dict[str, str] | None = None,
    ) -> None:
        """Serve ``data``, answering conditional requests with 304.

        Args:
            etag: ``True``: a quoted hash of ``data``; a string: that exact ETag;
                ``False``: none. A (weakly) matching ``If-None-Match`` gives 304.
            last_modified: ``True``: :data:`DEFAULT_LAST_MODIFIED`; a string: that;
                ``False``: none. ``If-Modified-Since`` at or after it gives 304
                (only if the request has no ``If-None-Match``, as RFC 9110 says).
            content_length: ``False`` sends the body chunked, without a length.
            headers: Extra response headers (e.g. ``Set-Cookie``).
        """
        tag = '"' + hashlib.sha256(data).hexdigest()[:16] + '"' if etag is True else etag or None
        modified = DEFAULT_LAST_MODIFIED if last_modified is True else last_modified or None
        fields = {"Content-Type": content_type, "ETag": tag, "Last-Modified": modified}
        extra = {k: v for k, v in fields.items() if v} | (headers or {})

        def serve(handler: _RequestHandler, _body: bytes) -> None:
            if _not_modified(handler, tag, modified):
                handler.respond(304, None, extra)
            elif content_length:
                handler.respond(200, data, extra)
            else:
                handler.write_chunked(data, 16 * 1024, extra)

        self._add(path, serve)

    def add_redirect(self, path: str, location: str, status: int = 302) -> None:
        """Answer ``status`` with ``Location: location`` (absolute or relative)."""
        self._add(path, lambda h, _b: h.respond(status, b"", _TEXT | {"Location": location}))

    def add_status(self, path: str, status: int, times: int | None = None) -> None:
        """Answer ``status`` (short text body) instead of the route at ``path``.

        Args:
            times: Answer it this many times, then fall through to the route (404
                if none); ``None``: for ever. E.g. ``add_status(p, 503, times=2)``.
        """
        with self._lock:
            self._statuses[path] = [status, times]

    def add_slow(
        self,
        path: str,
        delay_s: float,
        data: bytes,
        stall: Literal["headers", "body"] = "headers",
        content_type: str = "image/jpeg",
    ) -> None:
        """Serve ``data`` late (read timeouts, overlapping requests).

        Args:
            stall: ``"headers"``: wait ``delay_s`` before answering; ``"body"``:
                send headers and half the body, wait, then send the rest.
        """

        def serve(handler: _RequestHandler, _body: bytes) -> None:
            ctype = {"Content-Type": content_type}
            if stall == "headers":
                self._stopping.wait(delay_s)
                handler.respond(200, data, ctype)
                return
            handler.respond(200, None, ctype | {"Content-Length": str(len(data))})
            handler.write(data[: len(data) // 2])
            self._stopping.wait(delay_s)
            handler.write(data[len(data) // 2 :])

        self._add(path, serve)

    def add_lying_length(self, path: str, data: bytes, claimed_length: int | None = None) -> None:
        """Send all of ``data`` under a wrong or missing length, then close the connection.

        Args:
            claimed_length: ``None``: no ``Content-Length`` (the body ends at close,
                so its size is unknown up front); an int: that ``Content-Length``
                (an HTTP/1.1 client reads no further).
        """
        headers = _JPEG | {"Connection": "close"}
        if claimed_length is not None:
            headers["Content-Length"] = str(claimed_length)

        def serve(handler: _RequestHandler, _body: bytes) -> None:
            handler.close_connection = True
            handler.respond(200, None, headers)
            handler.write(data)

        self._add(path, serve)

    def add_chunked(self, path: str, data: bytes, chunk_size: int = 16 * 1024) -> None:
        """Send ``data`` with ``Transfer-Encoding: chunked`` (no length up front)."""
        self._add(path, lambda h, _b: h.write_chunked(data, chunk_size, _JPEG))

    def add_json_sink(self, path: str, status: int = 200) -> None:
        """Accept POSTed JSON at ``path`` and answer ``status``; see :meth:`received`."""

        def serve(handler: _RequestHandler, body: bytes) -> None:
            if handler.command != "POST":
                handler.respond(405, b"POST only\n", _TEXT)
                return
            with self._lock:
                self._received.setdefault(path, []).append(json.loads(body or b"null"))
            handler.respond(status, b"", _TEXT)

        self._add(path, serve)

    def add_handler(self, path: str, handler: Callable[[BaseHTTPRequestHandler], None]) -> None:
        """Escape hatch: ``handler(request_handler)`` writes the whole response itself."""
        self._add(path, lambda h, _b: handler(h))

    def add_responder(
        self, path: str, respond: Callable[[RecordedRequest], tuple[int, bytes, dict[str, str]]]
    ) -> None:
        """Answer with ``respond(request)``: (status, body, headers), e.g. a fake vendor API."""

        def serve(handler: _RequestHandler, body: bytes) -> None:
            headers = {name.lower(): value for name, value in handler.headers.items()}
            request = RecordedRequest(handler.command, handler.path, headers, body)
            status, data, extra = respond(request)
            handler.respond(status, data, extra)

        self._add(path, serve)

    def received(self, path: str) -> list[Any]:
        """JSON bodies POSTed to the sink at ``path``, oldest first."""
        with self._lock:
            return list(self._received.get(path, []))

    def requests_for(self, path: str) -> int:
        """How many requests arrived for ``path`` (any method, any answer)."""
        with self._lock:
            return self._counts[path]

    def requests(self, path: str | None = None) -> list[RecordedRequest]:
        """The requests received (for ``path`` only, if given), oldest first."""
        with self._lock:
            return [r for r in self._requests if path in (None, urlsplit(r.path).path)]

    def reset_counters(self) -> None:
        """Zero the counters; forget recorded requests and sink bodies; keep the routes."""
        with self._lock:
            self._counts.clear()
            self._requests.clear()
            for bodies in self._received.values():
                bodies.clear()
            self.bytes_sent = 0
            self.connections = 0
            self.max_concurrent = self._active

    # --- serving (runs in handler threads) ---------------------------------------

    def _add(self, path: str, route: _Route) -> None:
        with self._lock:
            self._routes[path] = route

    def _dispatch(self, handler: _RequestHandler) -> None:
        path = urlsplit(handler.path).path
        length = int(handler.headers.get("Content-Length") or 0)
        body = handler.rfile.read(length) if length else b""
        headers = {name.lower(): value for name, value in handler.headers.items()}
        with self._lock:
            self._requests.append(RecordedRequest(handler.command, handler.path, headers, body))
            self._counts[path] += 1
            self._active += 1
            self.max_concurrent = max(self.max_concurrent, self._active)
            route = self._routes.get(path)
            status = self._take_status(path)
        try:
            if status is not None:
                handler.respond(status, b"injected error\n", _TEXT)
            elif route is None:
                handler.respond(404, b"not found\n", _TEXT)
            else:
                route(handler, body)
        except _DISCONNECTS:
            handler.close_connection = True
        except Exception as exc:  # reported through .errors, not stderr
            self.errors.append(exc)
            handler.close_connection = True
        finally:
            with self._lock:
                self._active -= 1

    def _take_status(self, path: str) -> int | None:
        entry = self._statuses.get(path)
        if entry is None or entry[1] == 0:
            return None
        status, left = entry
        if left is not None:
            entry[1] = left - 1
        return status

    def _connected(self) -> None:
        with self._lock:
            self.connections += 1

    def _count(self, sent: int) -> None:
        with self._lock:
            self.bytes_sent += sent


def _not_modified(handler: BaseHTTPRequestHandler, etag: str | None, modified: str | None) -> bool:
    """Evaluate conditional headers in the order RFC 9110 section 13.2.2 gives."""
    if_none_match = handler.headers.get("If-None-Match")
    if if_none_match is not None:
        tags = {tag.strip().removeprefix("W/") for tag in if_none_match.split(",")}
        return etag is not None and ("*" in tags or etag.removeprefix("W/") in tags)
    if_modified_since = handler.headers.get("If-Modified-Since")
    if if_modified_since is None or modified is None:
        return False
    try:
        return parsedate_to_datetime(modified) <= parsedate_to_datetime(if_modified_since)
    except (TypeError, ValueError):
        return False
