"""ASGI middleware: request ids, the access log and the HTTP metrics, in one pass; and
the refusal of NUL characters in paths and queries.

It is plain ASGI (no BaseHTTPMiddleware) so the request id context variable it sets is
seen by the endpoint, its tasks and ``asyncio.to_thread`` calls.
"""

from __future__ import annotations

import logging
import time
from typing import Any
from urllib.parse import parse_qsl

from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from cartag.api.errors import invalid_input_response
from cartag.logs import accept_request_id, request_id_var
from cartag.telemetry import Telemetry

log = logging.getLogger("cartag.access")

REQUEST_ID_HEADER = "X-Request-ID"
_HEADER_KEY = REQUEST_ID_HEADER.lower().encode()
UNMATCHED = "unmatched"


def route_template(scope: Scope) -> str:
    """The template of the route that handled the request (``/v1/jobs/{job_id}``).

    Paths that matched no route share one label, so random URLs can't create series.
    """
    route: Any = scope.get("route")
    path = getattr(route, "path_format", None) or getattr(route, "path", None)
    return str(path) if path else UNMATCHED


class RequestContextMiddleware:
    """Assigns each HTTP request an id, logs it once answered and reports its metrics.

    The id is the client's ``X-Request-ID`` when it is sane (letters, digits, ``._:-``,
    at most 128 characters), else a new one; it is echoed in the response header.

    Args:
        app: The wrapped ASGI app.
        telemetry: Receives ``request_finished`` for every HTTP request.
    """

    def __init__(self, app: ASGIApp, telemetry: Telemetry) -> None:
        self.app = app
        self.telemetry = telemetry

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        supplied = None
        for name, value in scope.get("headers", []):
            if name == _HEADER_KEY:
                supplied = value.decode("latin-1")
                break
        request_id = accept_request_id(supplied)
        token = request_id_var.set(request_id)
        status = 500
        start = time.perf_counter()

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = [h for h in message.get("headers", []) if h[0].lower() != _HEADER_KEY]
                headers.append((_HEADER_KEY, request_id.encode()))
                message = {**message, "headers": headers}
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            duration = time.perf_counter() - start
            route = route_template(scope)
            method = scope.get("method", "GET")
            try:
                self.telemetry.request_finished(method, route, status, duration)
            except Exception:  # noqa: BLE001 - metrics must never fail a request
                log.exception("recording request metrics failed")
            log.info(
                "%s %s %d %.1fms",
                method,
                scope.get("path", ""),
                status,
                duration * 1000,
                extra={
                    "method": method,
                    "route": route,
                    "status": status,
                    "duration_ms": round(duration * 1000, 1),
                },
            )
            request_id_var.reset(token)


class NulGuardMiddleware:
    """Answers 422 to a request whose path or query holds a NUL character (``%00``).

    No id, key or filter of cartag holds one, and PostgreSQL's text cannot: a NUL that
    reached a query was a 500 there. Refusing it here covers every route at once, and
    the answer names the query parameter (or ``path``) that held it.

    Args:
        app: The wrapped ASGI app.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        field = _nul_field(scope) if scope["type"] == "http" else None
        if field is None:
            await self.app(scope, receive, send)
            return
        where = "the path" if field == "path" else f"the query parameter {field!r}"
        message = f"{where} holds a NUL character (%00); no cartag id or value has one"
        # A browser's page request gets the pages' 422 page, as for any other bad value.
        response = invalid_input_response(
            Request(scope), [{"field": field, "message": message}], in_path=field == "path"
        )
        await response(scope, receive, send)


def _nul_field(scope: Scope) -> str | None:
    """``path``, the name of the first query parameter holding a NUL, or None."""
    if "\x00" in scope.get("path", ""):
        return "path"
    query = scope.get("query_string", b"")
    if b"%00" not in query and b"\x00" not in query:
        return None
    for name, value in parse_qsl(query.decode("latin-1"), keep_blank_values=True):
        if "\x00" in name or "\x00" in value:
            return name.replace("\x00", "%00") or "query"
    return None
