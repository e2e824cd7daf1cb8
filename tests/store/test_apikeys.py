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


def test_a_scoped_key_acts_for_its_advertisers_only(db: Database) -> None:
    with db.write() as session:
        row, key = apikeys.create_key(
            session,
            name="dealer-42 staff",
            roles=["fixer", "classifier"],
            now=NOW,
            advertisers=["dealer-42", " dealer-7 ", "dealer-42"],
        )
        _, open_key = apikeys.create_key(session, name="ops", roles=["fixer"], now=NOW)
    with db.read() as session:
        scoped = apikeys.authenticate(session, key)
        unscoped = apikeys.authenticate(session, open_key)
        assert apikeys.key_advertisers(session, [row.id, unscoped.key_id]) == {
            row.id: ["dealer-42", "dealer-7"]
        }
    assert scoped.advertisers == {"dealer-42", "dealer-7"} and scoped.scoped
    assert scoped.may_act_for("dealer-7") and not scoped.may_act_for("dealer-77")
    scoped.require_advertiser("dealer-42")
    with pytest.raises(PermissionDeniedError, match="scoped to dealer-42, dealer-7.*dealer-77"):
        scoped.require_advertiser("dealer-77")
    with pytest.raises(PermissionDeniedError, match="global fixes need an unscoped API key"):
        scoped.require_unscoped("global fixes")
    assert not unscoped.scoped and unscoped.may_act_for("anyone")
    unscoped.require_unscoped("global fixes")


def test_scopes_are_validated(db: Database) -> None:
    with db.write() as session:
        with pytest.raises(InputError, match="reviewer concern every advertiser") as exc:
            apikeys.create_key(
                session, name="r", roles=["reviewer"], now=NOW, advertisers=["dealer-42"]
            )
        assert exc.value.field == "advertiser"
        with pytest.raises(InputError, match="admin"):
            apikeys.create_key(
                session, name="a", roles=["admin"], now=NOW, advertisers=["dealer-42"]
            )
        with pytest.raises(InputError, match="'dealer 42' is not an advertiser id"):
            apikeys.create_key(
                session, name="f", roles=["fixer"], now=NOW, advertisers=["dealer 42"]
            )
        with pytest.raises(InputError, match="not an advertiser id"):
            apikeys.create_key(session, name="f", roles=["fixer"], now=NOW, advertisers=["x" * 129])
        # A blank id is refused, not dropped (dropped, it made an unscoped key).
        for blank in ("", " "):
            with pytest.raises(InputError, match="empty") as caught:
                apikeys.create_key(session, name="f", roles=["fixer"], now=NOW, advertisers=[blank])
            assert caught.value.field == "advertiser"
    with db.read() as session:
        assert apikeys.list_keys(session) == []
