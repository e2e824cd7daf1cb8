"""Structured logs: one JSON object per line, carrying the id of the request being served.

The request id lives in a context variable set by the HTTP middleware
(:mod:`cartag.api.middleware`); asyncio tasks and ``asyncio.to_thread`` inherit it, so
the pipeline's log lines carry the id of the request they work for without passing it.

``CARTAG_LOG_FORMAT=json`` (default of ``cartag serve``) or ``text``.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import logging
import re
import sys
import uuid
from collections.abc import Iterator
from contextvars import ContextVar
from typing import Any, Final, Literal

from cartag.errors import InputError
from cartag.redaction import RedactingFilter

request_id_var: ContextVar[str | None] = ContextVar("cartag_request_id", default=None)


@contextlib.contextmanager
def request_id_scope(request_id: str) -> Iterator[None]:
    """Tag every log record made inside the block (and its threads) with ``request_id``.

    Jobs use ``job:<id>``, so a job's logs can be followed like a request's.
    """
    token = request_id_var.set(request_id)
    try:
        yield
    finally:
        request_id_var.reset(token)


# A client's X-Request-ID is kept when it looks like an id, so it can't inject log
# lines or huge values: letters, digits and . _ : - only, at most 128 characters.
_SANE_ID = re.compile(r"[A-Za-z0-9._:\-]{1,128}")

# Attributes every LogRecord has; anything else was passed with ``extra=``.
_STANDARD: Final[frozenset[str]] = frozenset(
    vars(logging.LogRecord("", 0, "", 0, "", None, None)).keys()
    | {"message", "asctime", "color_message"}  # uvicorn's ANSI-colored copy of msg
)

LogFormat = Literal["json", "text"]
_LEVELS: Final[frozenset[str]] = frozenset({"CRITICAL", "ERROR", "WARNING", "INFO", "DEBUG"})


def new_request_id() -> str:
    return uuid.uuid4().hex


def accept_request_id(value: str | None) -> str:
    """The client's request id if it is sane, else a fresh one."""
    if value and _SANE_ID.fullmatch(value):
        return value
    return new_request_id()


def current_request_id() -> str | None:
    return request_id_var.get()


class JsonFormatter(logging.Formatter):
    """Formats a record as one JSON line.

    Keys: ``ts`` (UTC, ISO 8601, milliseconds), ``level``, ``logger``, ``msg`` (the
    formatted message), ``request_id`` (or null), every ``extra=`` field, and ``exc``
    (the traceback) when there is one. Values JSON can't hold are written with ``str``.
    """

    def format(self, record: logging.LogRecord) -> str:
        ts = dt.datetime.fromtimestamp(record.created, dt.UTC)
        payload: dict[str, Any] = {
            "ts": ts.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
            "request_id": getattr(record, "request_id", None) or request_id_var.get(),
        }
        for key, value in vars(record).items():
            if key not in _STANDARD and key not in payload:
                payload[key] = value
        # exc_text first: a RedactingFilter leaves the redacted traceback there.
        if record.exc_text:
            payload["exc"] = record.exc_text
        elif record.exc_info:
            payload["exc"] = self.formatException(record.exc_info)
        if record.stack_info:
            payload["stack"] = self.formatStack(record.stack_info)
        return json.dumps(payload, default=str, ensure_ascii=False)


class TextFormatter(logging.Formatter):
    """A human-readable line with the request id in brackets when there is one."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)-7s %(name)s%(rid)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        rid = getattr(record, "request_id", None) or request_id_var.get()
        record.rid = f" [{rid}]" if rid else ""
        return super().format(record)


class _StderrHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """A stream handler that writes to whatever ``sys.stderr`` is when a record comes.

    As logging's own last-resort handler does: bound to the stderr of the moment it was
    made, it kept writing to a stream that had been swapped and closed since (a test
    runner's capture), and every later record raised "I/O operation on closed file".
    """

    def __init__(self) -> None:
        super().__init__(sys.stderr)

    @property
    def stream(self) -> Any:
        return sys.stderr

    @stream.setter
    def stream(self, _: Any) -> None:
        pass


def make_handler(fmt: LogFormat, stream: Any = None) -> logging.Handler:
    """A stream handler (stderr by default) with the formatter for ``fmt``.

    Its :class:`~cartag.redaction.RedactingFilter` keeps URL passwords and tokens out of
    every line, whichever logger wrote it (httpx logs each request's URL at INFO).
    """
    handler = _StderrHandler() if stream is None else logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    handler.addFilter(RedactingFilter())
    handler.set_name("cartag")
    return handler


def check_log_level(level: str, option: str = "log level") -> str:
    """The logging name of ``level`` (``info`` -> ``INFO``; uvicorn's ``trace`` -> ``DEBUG``).

    Raises:
        InputError: Naming ``option``: ``level`` is not a log level.
    """
    name = "DEBUG" if level.upper() == "TRACE" else level.upper()  # uvicorn's extra level
    if name not in _LEVELS:
        raise InputError(
            f"unknown {option} {level!r}; use one of {', '.join(sorted(_LEVELS)).lower()}",
            field="log_level",
        )
    return name


def configure_logging(fmt: LogFormat, level: str = "info") -> None:
    """Send every logger's records (cartag's, uvicorn's, libraries') to one handler.

    Replaces the handlers of the root logger and makes uvicorn's loggers propagate to
    it, so a JSON deployment gets JSON everywhere. Call once, at process start.

    Raises:
        InputError: ``level`` is not a log level.
    """
    name = check_log_level(level)
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
    root.addHandler(make_handler(fmt))
    root.setLevel(name)
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logger = logging.getLogger(name)
        logger.handlers.clear()
        logger.propagate = True
        # A logging.config call elsewhere (uvicorn's own config, Celery, Alembic's
        # fileConfig) may have disabled it or given it a level: the root's level rules.
        logger.disabled = False
        logger.setLevel(logging.NOTSET)
