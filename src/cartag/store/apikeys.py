"""API keys: created once, shown once, stored as a SHA-256 of the secret.

A key looks like ``ctg_<prefix>_<secret>``; the prefix finds the row, the
hash of the whole key is compared in constant time.

A key may be *scoped* to one or more advertisers (``api_key_advertisers``): it then acts
only for them (classify for them, see their images, make their overrides). Global fixes,
conflicts between advertisers and other advertisers' images need an unscoped key. Only
the ``classifier`` and ``fixer`` roles can be scoped: reviewing datasets and administering
models concern every advertiser.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import secrets
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from cartag.errors import AuthError, InputError, NotFoundError, PermissionDeniedError
from cartag.store.tables import ApiKeyAdvertiserRow, ApiKeyRow, BrowserSessionRow
from cartag.vocab import check_advertiser_id

# "admin" may do everything; the others are what the API checks.
ROLES = ("classifier", "fixer", "reviewer", "admin")
# The roles a key scoped to advertisers may have.
SCOPABLE_ROLES: Final[frozenset[str]] = frozenset({"classifier", "fixer"})
# An advertiser id as the API takes it (classify's advertiser_id).


@dataclass(frozen=True)
class Principal:
    """Who is calling: the key's name, roles and, for a scoped key, its advertisers.

    Attributes:
        key_id: The key's row id.
        name: The key's name (what the audit records as ``user``).
        roles: Its roles.
        advertisers: The advertisers a scoped key acts for; empty: unscoped (any).
    """

    key_id: int
    name: str
    roles: frozenset[str]
    advertisers: frozenset[str] = frozenset()

    @property
    def scoped(self) -> bool:
        return bool(self.advertisers)

    def require(self, role: str) -> None:
        """Raise PermissionDeniedError unless this key has ``role`` (or admin)."""
        if role not in self.roles and "admin" not in self.roles:
            raise PermissionDeniedError(
                f"this API key ({self.name}) lacks the {role!r} role; "
                f"create one with `cartag keys create --role {role}`"
            )

    def may_act_for(self, advertiser_id: str) -> bool:
        """Whether this key may act for ``advertiser_id`` (always, unscoped)."""
        return not self.advertisers or advertiser_id in self.advertisers

    def require_advertiser(self, advertiser_id: str) -> None:
        """Raise PermissionDeniedError unless this key may act for ``advertiser_id``."""
        if not self.may_act_for(advertiser_id):
            raise PermissionDeniedError(
                f"this API key ({self.name}) is scoped to {self.scope_text()}; "
                f"it cannot act for advertiser {advertiser_id!r}"
            )

    def require_unscoped(self, what: str) -> None:
        """Raise PermissionDeniedError for a scoped key: ``what`` needs an unscoped one."""
        if self.advertisers:
            raise PermissionDeniedError(
                f"{what} need an unscoped API key; this one ({self.name}) is scoped to "
                f"{self.scope_text()}"
            )

    def scope_text(self) -> str:
        """The advertisers of a scoped key, for messages (``dealer-42, dealer-77``)."""
        return ", ".join(sorted(self.advertisers)) or "every advertiser"


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


def parse_advertisers(advertisers: Sequence[str], roles: Sequence[str]) -> list[str]:
    """Validate the advertisers a key is scoped to (none: unscoped).

    Raises:
        InputError: An id is not 1-128 of ``A-Z a-z 0-9 . _ : @ / -``, or a role other
            than classifier/fixer is asked for a scoped key.
    """
    # A blank value is refused, not dropped: dropped, "--advertiser $UNSET" made a key
    # that acts for every advertiser.
    cleaned = sorted({check_advertiser_id(a.strip(), "advertiser") for a in advertisers})
    unscopable = sorted(set(roles) - SCOPABLE_ROLES)
    if cleaned and unscopable:
        raise InputError(
            f"a key scoped to advertisers may only have the roles "
            f"{', '.join(sorted(SCOPABLE_ROLES))}; {', '.join(unscopable)} concern every "
            "advertiser: create that key without --advertiser",
            field="advertiser",
        )
    return cleaned


# Longest key name: the audit's user column (String(128)).
NAME_MAX = 128


def parse_name(name: str) -> str:
    """A key's name as stored: 1-128 printable characters on one line, trimmed.

    It is the fix audit's ``user``, shown on the pages and in the CLI's tables.

    Raises:
        InputError: Blank, too long, or with a line break or control character.
    """
    clean = name.strip()
    if not clean:
        raise InputError("a key's name is empty: say who or what uses the key", field="name")
    if len(clean) > NAME_MAX:
        raise InputError(
            f"a key's name has {len(clean)} characters; at most {NAME_MAX}", field="name"
        )
    if not clean.isprintable():
        raise InputError(
            f"a key's name {clean!r} holds a line break or control character: one line of "
            "printable text",
            field="name",
        )
    return clean


def create_key(
    session: Session,
    *,
    name: str,
    roles: list[str],
    now: dt.datetime,
    advertisers: Sequence[str] = (),
) -> tuple[ApiKeyRow, str]:
    """Create a key. Returns the row and the plaintext key (shown once, never stored).

    Args:
        session: A write session.
        name: Who or what uses the key (the audit's ``user``).
        roles: Its roles (:data:`ROLES`).
        now: Creation time.
        advertisers: Scope the key to these advertisers (none: unscoped).

    Raises:
        InputError: See :func:`parse_roles` and :func:`parse_advertisers`.
    """
    clean = parse_roles(roles)
    scope = parse_advertisers(advertisers, clean)
    name = parse_name(name)
    prefix = secrets.token_hex(4)
    key = f"ctg_{prefix}_{secrets.token_urlsafe(24)}"
    row = ApiKeyRow(
        name=name, prefix=prefix, key_hash=_hash(key), roles=",".join(clean), created_at=now
    )
    session.add(row)
    session.flush()
    session.add_all(ApiKeyAdvertiserRow(key_id=row.id, advertiser_id=a) for a in scope)
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
    return principal_of(session, row)


def principal_of(session: Session, row: ApiKeyRow) -> Principal:
    """The principal of a key's row (checked by the caller), with its advertisers."""
    return Principal(
        key_id=row.id,
        name=row.name,
        roles=frozenset(row.roles.split(",")),
        advertisers=frozenset(key_advertisers(session, [row.id]).get(row.id, [])),
    )


def key_advertisers(session: Session, key_ids: Sequence[int]) -> dict[int, list[str]]:
    """The advertisers of each scoped key among ``key_ids`` (unscoped keys are absent)."""
    found: dict[int, list[str]] = defaultdict(list)
    stmt = (
        select(ApiKeyAdvertiserRow.key_id, ApiKeyAdvertiserRow.advertiser_id)
        .where(ApiKeyAdvertiserRow.key_id.in_(list(key_ids)))
        .order_by(ApiKeyAdvertiserRow.advertiser_id)
    )
    for key_id, advertiser_id in session.execute(stmt):
        found[key_id].append(advertiser_id)
    return dict(found)


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
    if row.revoked_at is not None:
        return row  # revoked already: its time stays the first one
    row.revoked_at = now
    session.execute(
        update(BrowserSessionRow)
        .where(BrowserSessionRow.key_id == row.id, BrowserSessionRow.revoked_at.is_(None))
        .values(revoked_at=now)
    )
    return row
