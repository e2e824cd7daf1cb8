"""FastAPI dependencies, as ``Annotated`` aliases the routes declare."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from cartag.api.state import AppState
from cartag.errors import AuthError
from cartag.store import apikeys
from cartag.store.apikeys import Principal

_bearer = HTTPBearer(auto_error=False, description="An API key from `cartag keys create`.")


def get_state(request: Request) -> AppState:
    state: AppState = request.app.state.cartag
    return state


StateDep = Annotated[AppState, Depends(get_state)]


def get_principal(
    state: StateDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Principal:
    if credentials is None or credentials.scheme.lower() != "bearer":
        raise AuthError("missing API key; send 'Authorization: Bearer <key>'")
    with state.db.read() as session:
        return apikeys.authenticate(session, credentials.credentials)


PrincipalDep = Annotated[Principal, Depends(get_principal)]


def require(role: str) -> Callable[[Principal], Principal]:
    """A dependency that admits keys with ``role`` (or admin)."""

    def check(principal: PrincipalDep) -> Principal:
        principal.require(role)
        return principal

    return check


ClassifierDep = Annotated[Principal, Depends(require("classifier"))]
FixerDep = Annotated[Principal, Depends(require("fixer"))]
