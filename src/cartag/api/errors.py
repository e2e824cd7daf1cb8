"""Maps exceptions to JSON error bodies; no traceback ever reaches a client."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from cartag.errors import AuthError, CartagError, InputError

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


async def _cartag_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, CartagError)
    field = exc.field if isinstance(exc, InputError) else None
    headers = {"WWW-Authenticate": "Bearer"} if type(exc) is AuthError else None
    return JSONResponse(
        _body(exc.code, exc.message, field), status_code=exc.status_code, headers=headers
    )


async def _validation_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    problems = [
        {"field": _field_path(err.get("loc", ())), "message": err.get("msg", "invalid")}
        for err in exc.errors()
    ]
    first = problems[0] if problems else {"field": "body", "message": "invalid request"}
    message = f"{first['field']}: {first['message']}"
    return JSONResponse(
        _body("invalid_input", message, first["field"], problems=problems), status_code=422
    )


async def _http_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    return JSONResponse(
        _body("http_error", str(exc.detail)), status_code=exc.status_code, headers=exc.headers
    )


async def _unexpected(_: Request, exc: Exception) -> JSONResponse:
    log.exception("unhandled error", exc_info=exc)
    return JSONResponse(
        _body("internal_error", "internal error; the server log has the details"),
        status_code=500,
    )


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(CartagError, _cartag_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(Exception, _unexpected)
