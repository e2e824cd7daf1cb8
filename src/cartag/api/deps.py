"""FastAPI dependencies, as ``Annotated`` aliases the routes declare."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated

from fastapi import Depends, Request, Response
from fastapi.security import APIKeyCookie, HTTPAuthorizationCredentials, HTTPBearer

from cartag.api.state import AppState
from cartag.errors import AuthError, PermissionDeniedError
from cartag.store import apikeys
from cartag.store.apikeys import Principal

_bearer = HTTPBearer(auto_error=False, description="An API key from `cartag keys create`.")

# Browser pages (/review, /monitor) log in once: the API key goes into an HttpOnly,
# SameSite=Strict cookie that the /v1 API accepts in place of the Bearer header.
KEY_COOKIE = "cartag_key"
# A request authenticated by the cookie that changes something must carry this header
# (value "1"). Another site can neither send the SameSite=Strict cookie nor set a custom
# header on a cross-site request without a CORS preflight, which cartag never grants.
CSRF_HEADER = "X-Cartag-CSRF"
_SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
_cookie = APIKeyCookie(
    name=KEY_COOKIE,
    auto_error=False,
    description="The API key, set by a page's login form (browsers only).",
)


def get_state(request: Request) -> AppState:
    state: AppState = request.app.state.cartag
    return state


StateDep = Annotated[AppState, Depends(get_state)]


def get_principal(
    request: Request,
    state: StateDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
    cookie_key: Annotated[str | None, Depends(_cookie)],
) -> Principal:
    """The caller, from ``Authorization: Bearer`` or else the browser login cookie.

    Raises:
        AuthError: No key, or an unknown/revoked one.
        PermissionDeniedError: A cookie-authenticated request that changes something
            lacks the :data:`CSRF_HEADER`.
    """
    if credentials is not None and credentials.scheme.lower() == "bearer":
        key = credentials.credentials
    elif cookie_key:
        if request.method not in _SAFE_METHODS and request.headers.get(CSRF_HEADER) != "1":
            raise PermissionDeniedError(
                f"a browser request that changes something must send the header "
                f"'{CSRF_HEADER}: 1' (or authenticate with 'Authorization: Bearer <key>')"
            )
        key = cookie_key
    else:
        raise AuthError("missing API key; send 'Authorization: Bearer <key>'")
    with state.db.read() as session:
        return apikeys.authenticate(session, key)


PrincipalDep = Annotated[Principal, Depends(get_principal)]


def require(role: str) -> Callable[[Principal], Principal]:
    """A dependency that admits keys with ``role`` (or admin)."""

    def check(principal: PrincipalDep) -> Principal:
        principal.require(role)
        return principal

    return check


ClassifierDep = Annotated[Principal, Depends(require("classifier"))]
FixerDep = Annotated[Principal, Depends(require("fixer"))]
ReviewerDep = Annotated[Principal, Depends(require("reviewer"))]


def browser_principal(
    state: StateDep, cookie_key: Annotated[str | None, Depends(_cookie)]
) -> Principal | None:
    """The caller of an HTML page, from the login cookie; None sends it to the login form."""
    if not cookie_key:
        return None
    try:
        with state.db.read() as session:
            return apikeys.authenticate(session, cookie_key)
    except AuthError:
        return None


BrowserPrincipalDep = Annotated[Principal | None, Depends(browser_principal)]


def set_key_cookie(response: Response, request: Request, key: str, max_age_s: int) -> None:
    """Log a browser in: the API key in an HttpOnly, SameSite=Strict cookie.

    The cookie is ``Secure`` when the page was served over HTTPS (directly or, as the
    ``X-Forwarded-Proto`` a proxy sets says, behind one).
    """
    https = request.url.scheme == "https" or request.headers.get("x-forwarded-proto") == "https"
    response.set_cookie(
        KEY_COOKIE,
        key,
        max_age=max_age_s,
        path="/",
        httponly=True,
        samesite="strict",
        secure=https,
    )


def clear_key_cookie(response: Response) -> None:
    """Log a browser out."""
    response.delete_cookie(KEY_COOKIE, path="/", httponly=True, samesite="strict")
