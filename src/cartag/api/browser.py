"""Browser logins of the HTML pages (/review, /monitor): sessions, CSRF tokens, headers.

* Logging in checks an API key once and opens a server-side session
  (:mod:`cartag.store.sessions`): the HttpOnly, SameSite=Strict cookie
  :data:`~cartag.api.deps.SESSION_COOKIE` holds a random token, never the key. The
  session lasts ``CARTAG_SESSION_TTL_S``; logging out revokes it in the database, and
  revoking its key ends it too.
* The login and logout forms carry a CSRF token in the hidden field :data:`CSRF_FIELD`.
  The login form's is also in a cookie of its own (double submit: another site can
  neither read it nor set it); the logout form's is derived from the session token,
  which another site cannot read.
* Every page is served with :data:`PAGE_HEADERS`.
* One login form handler serves both areas (:func:`login_form_submitted`), each area
  described by a :class:`LoginArea` (its root, its form's look and wording).
* A page tells a browser from a script by its ``Accept`` (:func:`prefers_html`): a
  browser's bad input gets the page again with the reason, a script's the JSON error.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final
from urllib.parse import parse_qs

from fastapi import Request, Response
from fastapi.responses import HTMLResponse, RedirectResponse

from cartag.api.deps import (
    SESSION_COOKIE,
    browser_principal,
    clear_session_cookie,
    set_session_cookie,
)
from cartag.api.state import AppState
from cartag.errors import AuthError, PermissionDeniedError
from cartag.store import apikeys
from cartag.store import sessions as session_repo
from cartag.store.apikeys import Principal

# The pages load nothing from elsewhere, run no inline script, may not be framed, and
# are never cached (they show what a logged-in key may see).
PAGE_HEADERS: Final[dict[str, str]] = {
    "Content-Security-Policy": "default-src 'self'; frame-ancestors 'none'; form-action 'self'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}
CSRF_FIELD: Final[str] = "csrf"
LOGIN_CSRF_COOKIE: Final[str] = "cartag_login_csrf"
_LOGIN_CSRF_MAX_AGE_S: Final[int] = 2 * 3600
_MAX_FORM_BYTES: Final[int] = 4096
_TOKEN = re.compile(r"[A-Za-z0-9_\-]{32,64}")


def _quality(accept: str, media_type: str) -> float:
    """The quality ``accept`` gives ``media_type``: its most specific range's ``q``."""
    kind = media_type.split("/")[0]
    best: tuple[int, float] = (-1, 0.0)
    for part in accept.split(","):
        name, *params = (p.strip() for p in part.split(";"))
        name = name.lower()
        specificity = {media_type: 2, f"{kind}/*": 1, "*/*": 0}.get(name)
        if specificity is None or specificity <= best[0]:
            continue
        quality = 1.0
        for param in params:
            key, _, value = param.partition("=")
            if key.strip().lower() == "q":
                try:
                    quality = min(max(float(value), 0.0), 1.0)
                except ValueError:
                    quality = 0.0
        best = (specificity, quality)
    return best[1]


def prefers_html(request: Request) -> bool:
    """Whether the request's ``Accept`` ranks HTML above JSON, as a browser's navigation does.

    Browsers send ``text/html,...,*/*;q=0.8``; curl sends ``*/*`` and scripts
    ``application/json`` or nothing: those keep the JSON answers.
    """
    accept = request.headers.get("accept", "")
    html = _quality(accept, "text/html")
    return html > 0 and html > _quality(accept, "application/json")


def _https(request: Request) -> bool:
    return request.url.scheme == "https" or request.headers.get("x-forwarded-proto") == "https"


def login_csrf_token(request: Request) -> str:
    """The login form's CSRF token: the one in the browser's cookie, else a new one.

    Keeping an existing token lets two open login tabs (review and monitor) both work.
    """
    current = request.cookies.get(LOGIN_CSRF_COOKIE, "")
    return current if _TOKEN.fullmatch(current) else secrets.token_urlsafe(32)


def set_login_csrf_cookie(response: Response, request: Request, token: str) -> None:
    """Send the login form's CSRF token as a cookie (with the form that carries it)."""
    response.set_cookie(
        LOGIN_CSRF_COOKIE,
        token,
        max_age=_LOGIN_CSRF_MAX_AGE_S,
        path="/",
        httponly=True,
        samesite="strict",
        secure=_https(request),
    )


def login_csrf_ok(request: Request, submitted: str | None) -> bool:
    """Whether a login form's token matches the browser's login cookie."""
    expected = request.cookies.get(LOGIN_CSRF_COOKIE, "")
    return bool(expected and submitted) and hmac.compare_digest(
        expected.encode(), (submitted or "").encode()
    )


def session_csrf_token(request: Request) -> str:
    """The logout form's CSRF token, derived from the session token ("" when logged out)."""
    token = request.cookies.get(SESSION_COOKIE, "")
    if not token:
        return ""
    return hmac.new(token.encode(), b"cartag-logout-csrf", hashlib.sha256).hexdigest()


def session_csrf_ok(request: Request, submitted: str | None) -> bool:
    """Whether a logout form's token belongs to the browser's session."""
    expected = session_csrf_token(request)
    return bool(expected and submitted) and hmac.compare_digest(
        expected.encode(), (submitted or "").encode()
    )


async def logout_form_ok(request: Request) -> bool:
    """Whether the POSTed logout form carries this session's CSRF token."""
    raw = await request.body()
    if len(raw) > _MAX_FORM_BYTES:
        return False
    try:
        fields = parse_qs(raw.decode("utf-8", "replace"), max_num_fields=4)
    except ValueError:  # more fields than the form has
        return False
    return session_csrf_ok(request, fields.get(CSRF_FIELD, [None])[0])


# Longer page addresses to come back to are dropped (the form goes to the area's root).
_MAX_NEXT = 2048
# A "." or ".." path segment, also percent-encoded: /fix/../v1/jobs leaves the area.
_DOT_SEGMENT: Final = re.compile(r"/(?:\.|%2e){1,2}(?:/|$)", re.IGNORECASE)


def page_address(request: Request) -> str:
    """The page asked for, path and query: where a login should come back to."""
    return request.url.path + (f"?{request.url.query}" if request.url.query else "")


def safe_next(target: str | None, area: str) -> str:
    """Where a login form may send the browser: a page under ``area``, else ``area`` itself.

    Only paths of this site: an open redirect would send a logged-in user anywhere.

    Args:
        target: The form's ``next`` value.
        area: The pages' root, e.g. ``/review`` or ``/monitor``.
    """
    if (
        target
        and len(target) <= _MAX_NEXT
        and (target == area or target.startswith((f"{area}/", f"{area}?")))
        and "//" not in target
        and "\\" not in target
        and not _DOT_SEGMENT.search(target.split("?", 1)[0])
    ):
        return target
    return area


def log_in(state: AppState, request: Request, response: Response, principal: Principal) -> None:
    """Open a session for ``principal`` and give its token to the browser.

    A session the browser already had ends: a new login never keeps an old token alive.
    """
    ttl_s = state.settings.session_ttl_s
    previous = request.cookies.get(SESSION_COOKIE, "")
    with state.db.write() as session:
        if previous:
            session_repo.revoke_session(session, previous, state.clock.now())
        token = session_repo.create_session(
            session, principal.key_id, now=state.clock.now(), ttl_s=ttl_s
        )
    set_session_cookie(response, request, token, ttl_s)
    response.delete_cookie(LOGIN_CSRF_COOKIE, path="/", httponly=True, samesite="strict")


def log_out(state: AppState, request: Request, response: Response) -> None:
    """Revoke the browser's session in the database and clear its cookie."""
    token = request.cookies.get(SESSION_COOKIE, "")
    if token:
        with state.db.write() as session:
            session_repo.revoke_session(session, token, state.clock.now())
    clear_session_cookie(response)


@dataclass(frozen=True)
class LoginArea:
    """An area of pages behind the login form.

    Attributes:
        root: The pages' root, e.g. ``/review``; the form is at ``<root>/login``.
        render: The form's HTML from ``(error, next_url, csrf)``.
        expired: The error shown when the form's CSRF token is wrong.
        no_key: The error shown when the form has no key.
        role: The role a key needs to log in.
    """

    root: str
    render: Callable[[str | None, str, str], str]
    expired: str
    no_key: str
    role: str = "reviewer"


def login_page(
    request: Request,
    area: LoginArea,
    status_code: int = 200,
    *,
    error: str | None = None,
    next_url: str,
) -> HTMLResponse:
    """The area's login form, its CSRF token in the page and in a cookie."""
    token = login_csrf_token(request)
    html = area.render(error, next_url, token)
    response = HTMLResponse(html, status_code=status_code, headers=PAGE_HEADERS)
    set_login_csrf_cookie(response, request, token)
    return response


def pasted_key(text: str) -> str:
    """The key in what was pasted into the form: without a ``Bearer`` prefix or quotes.

    People copy the key from a header or a shell line; the form's own hint was then to
    "send 'Authorization: Bearer ctg_...'", which is what they had pasted.
    """
    key = text.strip().strip("\"'`").strip()
    if key[:7].lower() == "bearer ":
        key = key[7:].strip().strip("\"'`").strip()
    return key


async def login_form_submitted(request: Request, state: AppState, area: LoginArea) -> Response:
    """Check the key of a POSTed login form; on success open a session and go on.

    A plain urlencoded form (no multipart parser needed). A wrong CSRF token, no key
    or a key that may not log in gets the form again, with the reason.

    A form too large or with more fields than the page's (not this page's form) gets the
    form again too.
    """
    raw = await request.body()
    if len(raw) > _MAX_FORM_BYTES:
        error = "the login form is too large: paste only the API key (ctg_...)"
        return login_page(request, area, 422, error=error, next_url=area.root)
    try:
        fields = parse_qs(raw.decode("utf-8", "replace"), max_num_fields=4)
    except ValueError:  # more fields than the form has
        error = "the login form had fields this page does not send: log in with this form"
        return login_page(request, area, 422, error=error, next_url=area.root)
    key = pasted_key((fields.get("key") or [""])[0])
    next_url = safe_next((fields.get("next") or [""])[0], area.root)
    if not login_csrf_ok(request, (fields.get(CSRF_FIELD) or [""])[0]):
        # Another site's form, or one older than its cookie: show a fresh one.
        return login_page(request, area, 403, error=area.expired, next_url=next_url)
    if not key:
        return login_page(request, area, 422, error=area.no_key, next_url=next_url)
    try:
        with state.db.read() as session:
            principal = apikeys.authenticate(session, key)
        principal.require(area.role)
    except AuthError as exc:
        return login_page(request, area, exc.status_code, error=exc.message, next_url=next_url)
    response = RedirectResponse(next_url, status_code=303, headers=PAGE_HEADERS)
    log_in(state, request, response, principal)
    return response


async def logout_form_submitted(request: Request, state: AppState, area: LoginArea) -> Response:
    """End the browser's session (revoked in the database) and go to the area's login form.

    A browser with no live session (logged out in another tab, or its session expired)
    goes to the login form too: there is nothing left to end.

    Raises:
        PermissionDeniedError: The form lacks this live session's CSRF token.
    """
    response = RedirectResponse(f"{area.root}/login", status_code=303, headers=PAGE_HEADERS)
    if not await logout_form_ok(request):
        if browser_principal(state, request.cookies.get(SESSION_COOKIE)) is not None:
            raise PermissionDeniedError("the logout form lacks this session's CSRF token")
        clear_session_cookie(response)
        return response
    log_out(state, request, response)
    return response
