"""API keys: created once, shown once, stored as a SHA-256 of the secret.

A key looks like ``ctg_<prefix>_<secret>``; the prefix finds the row, the
hash of the whole key is compared in constant time.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import secrets
from dataclasses import dataclass

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from cartag.errors import AuthError, InputError, NotFoundError, PermissionDeniedError
from cartag.store.tables import ApiKeyRow, BrowserSessionRow

# "admin" may do everything; the others are what the API checks.
ROLES = ("classifier", "fixer", "reviewer", "admin")


@dataclass(frozen=True)
class Principal:
    """Who is calling: the key's name and roles."""

    key_id: int
    name: str
    roles: frozenset[str]

    def require(self, role: str) -> None:
        """Raise PermissionDeniedError unless this key has ``role`` (or admin)."""
        if role not in self.roles and "admin" not in self.roles:
            raise PermissionDeniedError(
                f"this API key ({self.name}) lacks the {role!r} role; "
                f"create one with `cartag keys create --role {role}`"
            )


def _hash(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def parse_roles(roles: list[str]) -> list[str]:
    """Validate role names.

    Raises:
        InputError: A role is unknown or none is given.
    """
    cleaned = sorted({r.strip().lower() for r in roles if r.strip()})
    unknown = [r for r in cleaned if r not in ROLES]
    if unknown or not cleaned:
        raise InputError(
            f"unknown role(s) {', '.join(unknown) or '(none given)'}; "
            f"choose from {', '.join(ROLES)}",
            field="role",
        )
    return cleaned


def create_key(
    session: Session, *, name: str, roles: list[str], now: dt.datetime
) -> tuple[ApiKeyRow, str]:
    """Create a key. Returns the row and the plaintext key (shown once, never stored)."""
    clean = parse_roles(roles)
    prefix = secrets.token_hex(4)
    key = f"ctg_{prefix}_{secrets.token_urlsafe(24)}"
    row = ApiKeyRow(
        name=name, prefix=prefix, key_hash=_hash(key), roles=",".join(clean), created_at=now
    )
    session.add(row)
    session.flush()
    return row, key


def authenticate(session: Session, key: str) -> Principal:
    """Find the principal of a presented key.

    Raises:
        AuthError: The key is malformed, unknown or revoked.
    """
    parts = key.split("_", 2)
    if len(parts) != 3 or parts[0] != "ctg":
        raise AuthError("malformed API key; send 'Authorization: Bearer ctg_...'")
    row = session.scalars(select(ApiKeyRow).where(ApiKeyRow.prefix == parts[1])).one_or_none()
    if row is None or not hmac.compare_digest(row.key_hash, _hash(key)):
        raise AuthError("unknown API key; create one with `cartag keys create --role ...`")
    if row.revoked_at is not None:
        raise AuthError(f"API key {row.name!r} was revoked; create a new one")
    return principal_of(row)


def principal_of(row: ApiKeyRow) -> Principal:
    """The principal of a key's row (checked by the caller)."""
    return Principal(key_id=row.id, name=row.name, roles=frozenset(row.roles.split(",")))


def list_keys(session: Session) -> list[ApiKeyRow]:
    return list(session.scalars(select(ApiKeyRow).order_by(ApiKeyRow.id)))


def revoke_key(session: Session, prefix: str, now: dt.datetime) -> ApiKeyRow:
    """Revoke a key by its prefix (the 8 hex characters after ``ctg_``).

    Its browser sessions end with it.

    Raises:
        NotFoundError: No key has this prefix.
    """
    row = session.scalars(select(ApiKeyRow).where(ApiKeyRow.prefix == prefix)).one_or_none()
    if row is None:
        raise NotFoundError(f"no API key with prefix {prefix!r}; see `cartag keys list`")
    row.revoked_at = now
    session.execute(
        update(BrowserSessionRow)
        .where(BrowserSessionRow.key_id == row.id, BrowserSessionRow.revoked_at.is_(None))
        .values(revoked_at=now)
    )
    return row
