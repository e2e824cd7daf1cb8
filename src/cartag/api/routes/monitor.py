"""The monitoring page: GET /monitor (HTML), and its login form.

Needs a key with the ``reviewer`` role (or ``admin``): sent as ``Authorization: Bearer``
(scripts, curl) or, for browsers, entered once in the login form, which opens a session
(:mod:`cartag.api.browser`). Every page carries the security headers of /review.
Query: ``since`` (``24h``, ``7d``, ``2w`` or a date; default ``7d``) and ``advertiser``
(optional; empty, as the page's form sends a blank box: every advertiser).

A bad filter is a 422: a browser (logged in, its ``Accept`` preferring HTML) gets the page's
form again as typed, the reason beside it; scripts (a Bearer key, or ``Accept:
application/json``, ``*/*``) get the JSON error naming the field. The filter is checked
after the login, so a browser that is not logged in goes to the form and comes back to it.
"""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any, Final
from urllib.parse import quote

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from cartag.api import browser
from cartag.api.deps import BrowserPrincipalDep, StateDep
from cartag.api.schemas.common import ERROR_SCHEMA_REF, error_responses
from cartag.deploy.drift import drift_now
from cartag.deploy.monitor import SINCE_FORMS, parse_since, report_since
from cartag.deploy.operations import build_ops
from cartag.errors import InputError, PermissionDeniedError
from cartag.store import apikeys
from cartag.telemetry.prometheus import PrometheusTelemetry
from cartag.telemetry.snapshot import read as read_snapshot
from cartag.vocab import ADVERTISER_ID_MAX, ADVERTISER_ID_OR_EMPTY_PATTERN, check_advertiser_id
from cartag.web.monitor_page import render_invalid_filter, render_login, render_monitor

# Every route reads the store (the key, the session, the report): a store that fails is
# the API's 503 storage_unavailable, as on /v1.
router = APIRouter(tags=["operations"], responses=error_responses(503, html_route=True))

_bearer = HTTPBearer(auto_error=False, description="An API key with the reviewer role.")
_ROLE = "reviewer"
# The forms parse_since reads (which _check_filter calls), stated in the schema.
_SINCE_PATTERN: Final[str] = r"^\s*([0-9]{1,4}[hHdDwW]|[0-9]{4}-[0-9]{2}-[0-9]{2})\s*$"
_SINCE_MAX: Final[int] = 32


def _html(content: str, status_code: int = 200) -> HTMLResponse:
    return HTMLResponse(content, status_code=status_code, headers=browser.PAGE_HEADERS)


_LOGIN = browser.LoginArea(
    root="/monitor",
    render=lambda error, next_url, csrf: render_login(error=error, next_url=next_url, csrf=csrf),
    expired="the login form expired or came from another site; log in again",
    no_key="enter an API key",
    role=_ROLE,
)


# What the pages answer besides their HTML: stated in the schema (schemathesis checks it).
_Responses = dict[int | str, dict[str, Any]]
_TO_LOGIN: _Responses = {303: {"description": "To the login form (no key, no session)."}}
_JSON_OR_HTML = {
    "application/json": {"schema": {"$ref": ERROR_SCHEMA_REF}},
    "text/html": {"schema": {"type": "string"}},
}
_HTML_OR_JSON_403: _Responses = {
    403: {
        "description": "The key lacks the reviewer role (a browser gets the login page).",
        "content": _JSON_OR_HTML,
    }
}
_HTML_OR_JSON_422: _Responses = {
    422: {
        "description": "A bad since or advertiser (invalid_input; field names it). A browser "
        "(Accept preferring text/html, logged in) gets the page's form again with the reason.",
        "content": _JSON_OR_HTML,
    }
}
_LOGIN_ANSWERS: _Responses = {
    303: {"description": "Logged in: to the page the form came from."},
    **{
        status: {"description": text, "content": {"text/html": {"schema": {"type": "string"}}}}
        for status, text in (
            (401, "Unknown or revoked key: the form again."),
            (403, "The key lacks the reviewer role, or the form's CSRF token is wrong."),
        )
    },
    422: {
        "description": "No key (the form again), or a malformed form (JSON).",
        "content": _JSON_OR_HTML,
    },
}
_LOGIN_FORM: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "application/x-www-form-urlencoded": {
                "schema": {
                    "type": "object",
                    "required": ["key", browser.CSRF_FIELD],
                    "additionalProperties": False,
                    "properties": {
                        "key": {"type": "string", "pattern": r"\S", "maxLength": 512},
                        "next": {"type": "string", "maxLength": 512},
                        browser.CSRF_FIELD: {"type": "string", "maxLength": 512},
                    },
                }
            }
        },
    }
}


@router.get(
    "/monitor",
    response_class=HTMLResponse,
    responses={
        **_TO_LOGIN,
        **error_responses(401, html_route=True),
        **_HTML_OR_JSON_403,
        **_HTML_OR_JSON_422,
    },
)
def monitor_page(
    request: Request,
    state: StateDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
    user: BrowserPrincipalDep,
    # Stated in the schema, checked by _check_filter after the login (not by FastAPI, whose
    # 422 would reach a browser as JSON, before it logged in). The range of since (a past
    # day at most MAX_DAYS ago) depends on today, so that no schema can state it.
    since: Annotated[
        str,
        Query(
            json_schema_extra={"maxLength": _SINCE_MAX, "pattern": _SINCE_PATTERN},
            description="24h, 7d, 2w or a date (YYYY-MM-DD), at most 400 days back.",
        ),
    ] = "7d",
    advertiser: Annotated[
        str | None,
        Query(
            json_schema_extra={
                "maxLength": ADVERTISER_ID_MAX,
                "pattern": ADVERTISER_ID_OR_EMPTY_PATTERN,
            },
            description="An advertiser id; empty or left out: every advertiser.",
        ),
    ] = None,
) -> Response:
    """Answer mix and manual-fix rate per model version, day and advertiser; operational
    panels (latency, errors, skip reasons, cache hit rate, job queue, per model version);
    drift per model version and advertiser."""
    if credentials is not None and credentials.scheme.lower() == "bearer":
        with state.db.read() as session:
            principal = apikeys.authenticate(session, credentials.credentials)
        principal.require(_ROLE)
        as_page = False
    elif user is not None:
        try:
            user.require(_ROLE)
        except PermissionDeniedError as exc:
            here = browser.safe_next(browser.page_address(request), "/monitor")
            return browser.login_page(request, _LOGIN, 403, error=exc.message, next_url=here)
        as_page = browser.prefers_html(request)
    else:
        target = browser.page_address(request)
        return RedirectResponse(
            f"/monitor/login?next={quote(target, safe='')}",
            status_code=303,
            headers=browser.PAGE_HEADERS,
        )
    now = state.clock.now()
    try:
        _check_filter(since, advertiser or "", now)
    except InputError as exc:
        if not as_page:
            raise
        page = render_invalid_filter(
            error=exc.message,
            field=exc.field,
            since_text=since,
            advertiser_text=advertiser or "",
            csrf=browser.session_csrf_token(request),
        )
        return _html(page, status_code=422)
    with state.db.read() as session:
        report = report_since(session, state.settings, since, now, advertiser=advertiser or None)
        ops = build_ops(session, report, now)
        drift = drift_now(session, state.settings, now, advertiser=advertiser or None)
    telemetry = state.telemetry
    snapshot = (
        read_snapshot(telemetry.registry) if isinstance(telemetry, PrometheusTelemetry) else None
    )
    csrf = browser.session_csrf_token(request)
    return _html(
        render_monitor(
            report,
            since_text=since,
            generated=now,
            csrf=csrf,
            ops=ops,
            snapshot=snapshot,
            drift=drift,
        )
    )


def _check_filter(since: str, advertiser: str, now: dt.datetime) -> None:
    """Check the page's query as its schema states it, and ``since``'s range.

    ``since``'s forms and range are :func:`~cartag.deploy.monitor.parse_since`'s, the
    CLI's check too; its length is the schema's own bound.

    Raises:
        InputError: Naming ``since`` or ``advertiser``, saying what to write instead.
    """
    if len(since) > _SINCE_MAX:
        raise InputError(
            f"since is {len(since)} characters long, at most {_SINCE_MAX}: {SINCE_FORMS}",
            field="since",
        )
    try:
        parse_since(since, now)
    except InputError as exc:
        # Its words are the CLI's (--since); the page's field is "since".
        raise InputError(exc.message.removeprefix("--"), field="since") from None
    if advertiser and not advertiser.strip():
        raise InputError(
            "advertiser is only spaces: leave it empty for every advertiser, or give an "
            "advertiser's id",
            field="advertiser",
        )
    if advertiser:
        check_advertiser_id(advertiser, "advertiser")


@router.get("/monitor/login", response_class=HTMLResponse)
def login_form(request: Request, next: Annotated[str | None, Query()] = None) -> HTMLResponse:
    """The login form of the monitor page."""
    return browser.login_page(request, _LOGIN, next_url=browser.safe_next(next, "/monitor"))


@router.post(
    "/monitor/login",
    response_class=HTMLResponse,
    responses={**_LOGIN_ANSWERS, **error_responses(413, html_route=True)},
    openapi_extra=_LOGIN_FORM,
)
async def login(request: Request, state: StateDep) -> Response:
    """Check the key of the form; on success open a session and go on."""
    return await browser.login_form_submitted(request, state, _LOGIN)


@router.post(
    "/monitor/logout",
    responses={
        303: {"description": "Logged out: to the login form."},
        **error_responses(403, 413),
    },
)
async def logout(request: Request, state: StateDep) -> Response:
    """End the browser's session (revoked in the database, not only forgotten)."""
    return await browser.logout_form_submitted(request, state, _LOGIN)
