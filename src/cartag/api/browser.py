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
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from typing import Final
from urllib.parse import parse_qs

from fastapi import Request, Response

from cartag.api.deps import SESSION_COOKIE, clear_session_cookie, set_session_cookie
from cartag.api.state import AppState
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


def safe_next(target: str | None, area: str) -> str:
    """Where a login form may send the browser: a page under ``area``, else ``area`` itself.

    Only paths of this site: an open redirect would send a logged-in user anywhere.

    Args:
        target: The form's ``next`` value.
        area: The pages' root, e.g. ``/review`` or ``/monitor``.
    """
    if target and target.startswith(area) and "//" not in target and "\\" not in target:
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
