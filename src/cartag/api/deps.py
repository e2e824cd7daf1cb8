"""FastAPI dependencies, as ``Annotated`` aliases the routes declare."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated

from fastapi import Depends, Request, Response
from fastapi.dependencies.models import Dependant
from fastapi.security import APIKeyCookie, HTTPAuthorizationCredentials, HTTPBearer

from cartag.api.state import AppState
from cartag.errors import AuthError, InputError, PermissionDeniedError
from cartag.store import apikeys
from cartag.store import sessions as session_repo
from cartag.store.apikeys import Principal

_bearer = HTTPBearer(auto_error=False, description="An API key from `cartag keys create`.")

# Browser pages (/review, /monitor) log in once (cartag.api.browser): a server-side
# session's random token goes into an HttpOnly, SameSite=Strict cookie that the /v1 API
# accepts in place of the Bearer header. The API key itself never reaches the browser.
SESSION_COOKIE = "cartag_session"
# A request authenticated by the cookie that changes something must carry this header
# (value "1"). Another site can neither send the SameSite=Strict cookie nor set a custom
# header on a cross-site request without a CORS preflight, which cartag never grants.
CSRF_HEADER = "X-Cartag-CSRF"
_SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
_cookie = APIKeyCookie(
    name=SESSION_COOKIE,
    auto_error=False,
    description="A login session, opened by a page's login form (browsers only).",
)


def get_state(request: Request) -> AppState:
    state: AppState = request.app.state.cartag
    return state


StateDep = Annotated[AppState, Depends(get_state)]


def get_principal(
    request: Request,
    state: StateDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
    session_token: Annotated[str | None, Depends(_cookie)],
) -> Principal:
    """The caller, from ``Authorization: Bearer`` or else the browser's login session.

    Raises:
        AuthError: No key, or an unknown/revoked one; an unknown, expired or revoked
            session.
        PermissionDeniedError: A cookie-authenticated request that changes something
            lacks the :data:`CSRF_HEADER`.
    """
    if credentials is not None and credentials.scheme.lower() == "bearer":
        with state.db.read() as session:
            return apikeys.authenticate(session, credentials.credentials)
    if not session_token:
        raise AuthError("missing API key; send 'Authorization: Bearer <key>'")
    if request.method not in _SAFE_METHODS and request.headers.get(CSRF_HEADER) != "1":
        raise PermissionDeniedError(
            f"a browser request that changes something must send the header "
            f"'{CSRF_HEADER}: 1' (or authenticate with 'Authorization: Bearer <key>')"
        )
    with state.db.read() as session:
        return session_repo.authenticate_session(session, session_token, state.clock.now())


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
    state: StateDep, session_token: Annotated[str | None, Depends(_cookie)]
) -> Principal | None:
    """The caller of an HTML page, from its login session; None sends it to the login form."""
    if not session_token:
        return None
    try:
        with state.db.read() as session:
            return session_repo.authenticate_session(session, session_token, state.clock.now())
    except AuthError:
        return None


BrowserPrincipalDep = Annotated[Principal | None, Depends(browser_principal)]


def set_session_cookie(response: Response, request: Request, token: str, max_age_s: int) -> None:
    """Log a browser in: the session token in an HttpOnly, SameSite=Strict cookie.

    The cookie is ``Secure`` when the page was served over HTTPS (directly or, as the
    ``X-Forwarded-Proto`` a proxy sets says, behind one).
    """
    https = request.url.scheme == "https" or request.headers.get("x-forwarded-proto") == "https"
    response.set_cookie(
        SESSION_COOKIE,
        token,
        max_age=max_age_s,
        path="/",
        httponly=True,
        samesite="strict",
        secure=https,
    )


def clear_session_cookie(response: Response) -> None:
    """Forget the browser's session cookie.

    :func:`cartag.api.browser.log_out` revokes the session itself first.
    """
    response.delete_cookie(SESSION_COOKIE, path="/", httponly=True, samesite="strict")


def known_query(request: Request) -> None:
    """Refuse a query parameter the route does not take (a dependency of the /v1 routes).

    ``GET /v1/jobs?stauts=done`` answered every job: a misspelt filter was ignored, and
    the answer looked like the filter's.

    Raises:
        InputError: Naming the first unknown parameter and those the route takes.
    """
    route = request.scope.get("route")
    dependant = getattr(route, "dependant", None)
    if dependant is None:
        return
    known = _query_names(dependant)
    unknown = sorted(set(request.query_params) - known)
    if unknown:
        takes = ", ".join(sorted(known)) if known else "no query parameters"
        raise InputError(
            f"unknown query parameter {unknown[0]!r}; {request.url.path} takes {takes}",
            field=unknown[0],
        )


def _query_names(dependant: Dependant) -> set[str]:
    """The query parameters a route takes, its dependencies' included."""
    names = {param.alias for param in dependant.query_params}
    for sub in dependant.dependencies:
        names |= _query_names(sub)
    return names
