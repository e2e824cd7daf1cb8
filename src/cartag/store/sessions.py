"""Browser login sessions (/review, /monitor): random tokens, stored hashed, that expire.

The login form checks an API key once; the browser then holds only a session token in
its cookie, never the key. A session ends when it expires, at logout (revoked here, so a
copied cookie is useless afterwards) and when its API key is revoked.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import secrets
from typing import Final

from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session

from cartag.errors import AuthError
from cartag.store.apikeys import Principal, principal_of
from cartag.store.tables import ApiKeyRow, BrowserSessionRow

# Tokens are 32 random bytes: guessing one is hopeless, so a plain SHA-256 suffices.
_TOKEN_BYTES: Final[int] = 32
_MAX_TOKEN_CHARS: Final[int] = 128


def _hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def create_session(session: Session, key_id: int, *, now: dt.datetime, ttl_s: int) -> str:
    """Open a session for the key ``key_id``; returns its token (shown once, stored hashed).

    Sessions that expired are deleted on the way.
    """
    session.execute(delete(BrowserSessionRow).where(BrowserSessionRow.expires_at < now))
    token = secrets.token_urlsafe(_TOKEN_BYTES)
    session.add(
        BrowserSessionRow(
            token_hash=_hash(token),
            key_id=key_id,
            created_at=now,
            expires_at=now + dt.timedelta(seconds=ttl_s),
        )
    )
    session.flush()
    return token


def authenticate_session(session: Session, token: str, now: dt.datetime) -> Principal:
    """The principal of a live session.

    Raises:
        AuthError: The token is unknown, expired or revoked, or its key was revoked.
    """
    if not token or len(token) > _MAX_TOKEN_CHARS:
        raise AuthError("not logged in; log in again")
    found = session.execute(
        select(BrowserSessionRow, ApiKeyRow)
        .join(ApiKeyRow, ApiKeyRow.id == BrowserSessionRow.key_id)
        .where(BrowserSessionRow.token_hash == _hash(token))
    ).one_or_none()
    if found is None:
        raise AuthError("unknown session; log in again")
    row, key = found
    if row.revoked_at is not None or row.expires_at <= now:
        raise AuthError("the session ended; log in again")
    if key.revoked_at is not None:
        raise AuthError(f"API key {key.name!r} was revoked; log in with another key")
    return principal_of(session, key)


def revoke_session(session: Session, token: str, now: dt.datetime) -> bool:
    """End the session of ``token`` (logout); False if there was none to end."""
    if not token or len(token) > _MAX_TOKEN_CHARS:
        return False
    outcome = session.execute(
        update(BrowserSessionRow)
        .where(BrowserSessionRow.token_hash == _hash(token), BrowserSessionRow.revoked_at.is_(None))
        .values(revoked_at=now)
    )
    return int(getattr(outcome, "rowcount", 0) or 0) == 1
