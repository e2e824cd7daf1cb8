"""Maps exceptions to JSON error bodies; no traceback ever reaches a client."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any, Final

from fastapi import APIRouter, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response
from sqlalchemy.exc import DBAPIError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect
from starlette.routing import Route

from cartag.api.browser import PAGE_HEADERS, prefers_html
from cartag.errors import (
    AuthError,
    CartagError,
    InputError,
    QueueUnavailableError,
    StorageError,
)
from cartag.store.health import as_storage_error
from cartag.vocab import ADVERTISER_ID_OR_EMPTY_PATTERN, ADVERTISER_ID_PATTERN, ADVERTISER_ID_RULE
from cartag.web import environment as web_environment

log = logging.getLogger(__name__)


def _body(code: str, message: str, field: str | None = None, **extra: Any) -> dict[str, Any]:
    error: dict[str, Any] = {"code": code, "message": message}
    if field is not None:
        error["field"] = field
    error.update(extra)
    return {"error": error}


def _field_path(loc: tuple[Any, ...] | list[Any]) -> str:
    parts = [str(p) for p in loc]
    if parts and parts[0] in ("body", "query", "path", "header"):
        parts = parts[1:]
    return ".".join(parts) or "body"


def error_response(exc: CartagError, headers: dict[str, str] | None = None) -> JSONResponse:
    """The JSON answer for ``exc``: its status and ``{"error": {code, message, field}}``."""
    if isinstance(exc, InputError):
        # Every invalid_input answer lists its problems, as the validation errors do.
        problem = {"field": exc.field or "body", "message": exc.message}
        body = _body(exc.code, exc.message, exc.field, problems=[problem])
    else:
        body = _body(exc.code, exc.message)
    return JSONResponse(body, status_code=exc.status_code, headers=headers)


async def _cartag_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, CartagError)
    headers = {"WWW-Authenticate": "Bearer"} if type(exc) is AuthError else None
    if isinstance(exc, QueueUnavailableError):
        headers = {"Retry-After": "30"}
    return error_response(exc, headers)


_SEND_JSON = "send a JSON object with Content-Type: application/json"
# FastAPI's 400 when a JSON body cannot be read at all (not UTF-8, nested too deep, a
# number too long for Python): it names neither the body nor what to do.
_UNREADABLE_BODY = "There was an error parsing the body"


# The patterns advertiser ids are checked with (required, or optional in a query).
_ID_PATTERNS: Final[frozenset[str]] = frozenset(
    {ADVERTISER_ID_PATTERN, ADVERTISER_ID_OR_EMPTY_PATTERN}
)


def _is_json(request: Request) -> bool:
    media_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    return media_type == "application/json" or media_type.endswith("+json")


def _problem(request: Request, err: dict[str, Any]) -> dict[str, str]:
    """One validation error as ``{field, message}``, the body's own problems in words."""
    loc = tuple(err.get("loc", ()))
    if err.get("type") == "json_invalid":
        # loc is ("body", offset): the offset is where the parser stopped, not a field.
        reason = (err.get("ctx") or {}).get("error") or "not valid JSON"
        where = f" at character {loc[1]}" if len(loc) > 1 and isinstance(loc[1], int) else ""
        return {"field": "body", "message": f"not valid JSON ({reason}{where}); {_SEND_JSON}"}
    if loc == ("body",) and not _is_json(request):
        sent = request.headers.get("content-type") or "no Content-Type"
        return {"field": "body", "message": f"{_SEND_JSON} (this request has {sent})"}
    pattern = (err.get("ctx") or {}).get("pattern")
    if err.get("type") == "string_pattern_mismatch" and pattern in _ID_PATTERNS:
        # The advertiser id's pattern is unreadable: say the rule in words.
        return {"field": _field_path(loc), "message": f"not an advertiser id: {ADVERTISER_ID_RULE}"}
    return {"field": _field_path(loc), "message": err.get("msg", "invalid")}


# Browser pages whose path and query FastAPI validates: a browser gets their 422 as a page.
_PAGE_AREAS: Final[tuple[str, ...]] = ("fix", "review")
# Areas of pages: a browser asking for an address under one that none serves gets a page.
_MISSING_PAGE_AREAS: Final[tuple[str, ...]] = ("fix", "review", "monitor")
_page_templates = web_environment()


def _page_area(request: Request, areas: tuple[str, ...] = _PAGE_AREAS) -> str | None:
    """The area (``fix``, ``review``...) of a browser's request of a page, else None."""
    area = request.url.path.strip("/").split("/", 1)[0]
    if area in areas and request.method in ("GET", "HEAD") and prefers_html(request):
        return area
    return None


async def _validation_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    errors = exc.errors()
    problems = [_problem(request, err) for err in errors]
    in_path = any(tuple(err.get("loc", ()))[:1] == ("path",) for err in errors)
    return invalid_input_response(request, problems, in_path=in_path)


def invalid_input_response(
    request: Request, problems: list[dict[str, str]], *, in_path: bool
) -> Response:
    """The 422 of a request's own problems: a page for a browser's page request, else JSON.

    Args:
        request: The request.
        problems: ``{field, message}`` of each problem, first the one the JSON names.
        in_path: Whether a problem is in the path: the page then links to the area's
            start, not to the same path without its query (which would be as wrong).
    """
    first = problems[0] if problems else {"field": "body", "message": "invalid request"}
    area = _page_area(request)
    if area is not None:
        # A bookmarked or mistyped address: a page that says what to change, never JSON;
        # it shows nothing but the address's own problems, so it needs no login.
        html = _page_templates.get_template("page_invalid.html").render(
            area=area,
            problems=problems,
            back=f"/{area}" if in_path else request.url.path,
            in_path=in_path,
        )
        return HTMLResponse(html, status_code=422, headers=PAGE_HEADERS)
    message = f"{first['field']}: {first['message']}"
    return JSONResponse(
        _body("invalid_input", message, first["field"], problems=problems), status_code=422
    )


def index_route_methods(app: FastAPI, routers: Iterable[APIRouter]) -> None:
    """Record the path pattern and methods of every route, for the ``Allow`` of a 405.

    Starlette's 405 names only the first route whose path matched: that misses a path
    served by several routes (GET and POST .../review/decisions), and for
    /v1/models/rollback it names GET, of /v1/models/{version}.
    """
    app.state.route_methods = [
        (route.path_regex, len(route.param_convertors), frozenset(route.methods))
        for router in routers
        for route in router.routes
        if isinstance(route, Route) and route.methods
    ]


def _allowed_methods(request: Request) -> str | None:
    """The methods of the routes of the request's path; the most literal path wins.

    (Fewest path parameters, as in the OpenAPI schema: /v1/models/rollback is POST only.)
    """
    path, root = request.scope["path"], request.scope.get("root_path", "")
    path = path.removeprefix(root) if root and path.startswith(root + "/") else path
    found: dict[int, set[str]] = {}
    for regex, params, methods in getattr(request.app.state, "route_methods", ()):
        if regex.match(path):
            found.setdefault(params, set()).update(methods)
    return ", ".join(sorted(found[min(found)])) if found else None


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, StarletteHTTPException)
    headers = exc.headers
    if exc.status_code == 405 and (allow := _allowed_methods(request)) is not None:
        headers = {**(headers or {}), "Allow": allow}
    if exc.status_code == 400 and exc.detail == _UNREADABLE_BODY:
        message = (
            "the body could not be read as JSON (not UTF-8, nested too deeply or a number "
            f"too long); {_SEND_JSON}"
        )
        return JSONResponse(_body("invalid_body", message, "body"), status_code=400)
    if exc.status_code == 404:
        area = _page_area(request, _MISSING_PAGE_AREAS)
        if area is not None:
            # A browser's mistyped or stale link under the pages: a page with the way back.
            html = _page_templates.get_template("page_missing.html").render(
                area=area, path=request.url.path
            )
            return HTMLResponse(html, status_code=404, headers=PAGE_HEADERS)
        # No route: the same code as a route's own 404, and a message saying what to do.
        message = f"no such address: {request.method} {request.url.path}; /docs lists the API"
        return JSONResponse(_body("not_found", message), status_code=404, headers=headers)
    if exc.status_code == 405:
        allowed = (headers or {}).get("Allow")
        message = f"{request.method} is not allowed on {request.url.path}" + (
            f"; use {allowed}" if allowed else ""
        )
        return JSONResponse(_body("method_not_allowed", message), status_code=405, headers=headers)
    return JSONResponse(
        _body("http_error", str(exc.detail)), status_code=exc.status_code, headers=headers
    )


async def _client_gone(request: Request, exc: Exception) -> JSONResponse:
    """The client closed the connection before its body arrived: a 400, not a crash.

    Nobody reads the answer; it keeps the access log and the 5xx metrics true (a
    disconnect during a login form's post was logged as an unhandled error and a 500).
    """
    log.info("client disconnected before its request body arrived: %s", request.url.path)
    return JSONResponse(
        _body("client_disconnected", "the connection closed before the body arrived"),
        status_code=400,
    )


async def _unexpected(_: Request, exc: Exception) -> JSONResponse:
    log.exception("unhandled error", exc_info=exc)
    return JSONResponse(
        _body("internal_error", "internal error; the server log has the details"),
        status_code=500,
    )


async def _storage_error(request: Request, exc: Exception) -> JSONResponse:
    """A full disk, a read-only or unreachable database: 503 ``storage_unavailable``.

    Database errors that are not about storage (a constraint, a bug) stay 500s.
    """
    error = as_storage_error(exc)
    if error is None:
        return await _unexpected(request, exc)
    # The driver's message only (str(exc) would log the SQL and its parameters).
    cause = getattr(exc, "orig", None) or exc
    log.warning("%s on %s: %s (%r)", error.code, request.url.path, error.message, cause)
    state = getattr(request.app.state, "cartag", None)
    if state is not None:
        if state.storage is not None:
            state.storage.failed(error.message)
        state.telemetry.storage_failed("request")
    return error_response(error, {"Retry-After": "30"})


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(CartagError, _cartag_error)
    app.add_exception_handler(StorageError, _storage_error)
    app.add_exception_handler(DBAPIError, _storage_error)
    app.add_exception_handler(PoolTimeoutError, _storage_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(ClientDisconnect, _client_gone)
    app.add_exception_handler(Exception, _unexpected)
