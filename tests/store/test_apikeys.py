from __future__ import annotations

import pytest

from cartag.errors import AuthError, InputError, NotFoundError, PermissionDeniedError
from cartag.store import apikeys
from cartag.store.db import Database
from tests.support.factories import NOW


def test_key_roundtrip_roles_and_revocation(db: Database) -> None:
    with db.write() as session:
        row, key = apikeys.create_key(session, name="scraper", roles=["classifier"], now=NOW)
    assert key.startswith(f"ctg_{row.prefix}_")
    assert key not in row.key_hash
    with db.read() as session:
        principal = apikeys.authenticate(session, key)
    principal.require("classifier")
    with pytest.raises(PermissionDeniedError, match="fixer"):
        principal.require("fixer")
    with db.write() as session:
        apikeys.revoke_key(session, row.prefix, NOW)
    with db.read() as session, pytest.raises(AuthError, match="revoked"):
        apikeys.authenticate(session, key)


def test_wrong_and_malformed_keys(db: Database) -> None:
    with db.write() as session:
        row, key = apikeys.create_key(session, name="x", roles=["admin"], now=NOW)
    with db.read() as session:
        apikeys.authenticate(session, key).require("fixer")  # admin may do all
        with pytest.raises(AuthError):
            apikeys.authenticate(session, key[:-1] + ("A" if key[-1] != "A" else "B"))
        with pytest.raises(AuthError, match="malformed"):
            apikeys.authenticate(session, "hello")
    with db.write() as session, pytest.raises(NotFoundError):
        apikeys.revoke_key(session, "00000000", NOW)


def test_unknown_role_is_refused() -> None:
    with pytest.raises(InputError, match="superuser"):
        apikeys.parse_roles(["superuser"])
