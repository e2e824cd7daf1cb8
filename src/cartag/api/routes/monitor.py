"""The monitoring page: GET /monitor (HTML), and its login form.

Needs a key with the ``reviewer`` role (or ``admin``): sent as ``Authorization: Bearer``
(scripts, curl) or, for browsers, entered once in the login form, which keeps it in an
HttpOnly cookie. Query: ``since`` (``24h``, ``7d``, ``2w`` or a date; default ``7d``) and
``advertiser`` (optional).
"""

from __future__ import annotations

from typing import Annotated
from urllib.parse import parse_qs, quote

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from cartag.api.deps import (
    BrowserPrincipalDep,
    StateDep,
    clear_key_cookie,
    set_key_cookie,
)
from cartag.errors import AuthError, InputError, PermissionDeniedError
from cartag.ops.monitor import report_since
from cartag.ops.page import render_login, render_monitor
from cartag.store import apikeys

router = APIRouter(tags=["operations"])

_bearer = HTTPBearer(auto_error=False, description="An API key with the reviewer role.")
_ROLE = "reviewer"
_LOGIN_MAX_AGE_S = 12 * 3600
_MAX_FORM_BYTES = 4096


def _safe_next(value: str | None) -> str:
    # Only paths of this site: an open redirect would send a logged-in user anywhere.
    if value and value.startswith("/monitor") and "//" not in value and "\\" not in value:
        return value
    return "/monitor"


@router.get("/monitor", response_class=HTMLResponse)
def monitor_page(
    request: Request,
    state: StateDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
    browser: BrowserPrincipalDep,
    since: Annotated[str, Query(max_length=32, description="24h, 7d, 2w or a date.")] = "7d",
    advertiser: Annotated[str | None, Query(max_length=128)] = None,
) -> Response:
    """Answer mix and manual-fix rate per model version, day and advertiser."""
    if credentials is not None and credentials.scheme.lower() == "bearer":
        with state.db.read() as session:
            principal = apikeys.authenticate(session, credentials.credentials)
        principal.require(_ROLE)
    elif browser is not None:
        try:
            browser.require(_ROLE)
        except PermissionDeniedError as exc:
            return HTMLResponse(render_login(error=exc.message), status_code=403)
    else:
        target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        return RedirectResponse(f"/monitor/login?next={quote(target, safe='')}", status_code=303)
    now = state.clock.now()
    with state.db.read() as session:
        report = report_since(session, state.settings, since, now, advertiser=advertiser or None)
    return HTMLResponse(render_monitor(report, since_text=since, generated=now))


@router.get("/monitor/login", response_class=HTMLResponse)
def login_form(next: Annotated[str | None, Query(max_length=512)] = None) -> HTMLResponse:
    """The login form of the monitor page."""
    return HTMLResponse(render_login(next_url=_safe_next(next)))


@router.post("/monitor/login", response_class=HTMLResponse)
async def login(request: Request, state: StateDep) -> Response:
    """Check the key of the form; on success keep it in an HttpOnly cookie and go on."""
    raw = await request.body()
    if len(raw) > _MAX_FORM_BYTES:
        raise InputError("the login form is too large", field="key")
    try:
        form = parse_qs(raw.decode("utf-8", errors="replace"), max_num_fields=4)
    except ValueError as exc:  # more fields than the form has
        raise InputError("the login form has unexpected fields", field="key") from exc
    key = (form.get("key") or [""])[0].strip()
    next_url = _safe_next((form.get("next") or [""])[0])
    if not key:
        return HTMLResponse(render_login(error="enter an API key", next_url=next_url), 422)
    try:
        with state.db.read() as session:
            principal = apikeys.authenticate(session, key)
        principal.require(_ROLE)
    except AuthError as exc:
        return HTMLResponse(
            render_login(error=exc.message, next_url=next_url), status_code=exc.status_code
        )
    response = RedirectResponse(next_url, status_code=303)
    set_key_cookie(response, request, key, _LOGIN_MAX_AGE_S)
    return response


@router.post("/monitor/logout")
def logout() -> Response:
    """Forget the browser's key."""
    response = RedirectResponse("/monitor/login", status_code=303)
    clear_key_cookie(response)
    return response
