"""Registry tables: model versions, aliases and the deployment history."""

from __future__ import annotations

import datetime as dt

import pytest

from cartag.errors import ConflictError, InputError, NotFoundError
from cartag.store import model_versions as repo
from cartag.store.db import Database
from cartag.store.tables import DeploymentRow
from tests.support.factories import NOW


def _add(db: Database, version: str) -> None:
    with db.write() as session:
        repo.add_version(
            session,
            version=version,
            path=version,
            files_sha256="0" * 64,
            status=repo.REGISTERED,
            card={},
            metrics={},
            dataset_ref=None,
            created_by="t",
            now=NOW,
        )


def test_aliases_and_history(db: Database) -> None:
    for version in ("a", "b"):
        _add(db, version)
    with db.write() as session:
        assert repo.alias_version(session, "production") is None
        repo.point_alias(session, "production", "a", by="t", reason="initial", now=NOW)
        later = NOW + dt.timedelta(hours=1)
        repo.point_alias(session, "production", "b", by="alice", reason="promote", now=later)
        repo.point_alias(session, "candidate", "a", by="t", reason="promote", now=later)
    with db.write() as session, pytest.raises(ConflictError, match="already serves"):
        repo.point_alias(session, "production", "b", by="t", reason="promote", now=later)
    with db.read() as session:
        assert repo.alias_version(session, "production") == "b"
        row = repo.get_alias(session, "production")
        assert row is not None and row.version == "b"
        assert repo.aliases_by_version(session) == {"a": ["candidate"], "b": ["production"]}
        rows = repo.history(session, "production")
        assert [(r.version, r.reason, r.by) for r in rows] == [
            ("a", "initial", "t"),
            ("b", "promote", "alice"),
        ]
        assert rows[0].ended_at == later and rows[1].ended_at is None
        with pytest.raises(NotFoundError):
            repo.get_version(session, "zzz")
    with pytest.raises(InputError):
        repo.check_alias("staging")


def test_metrics_merge_per_set(db: Database) -> None:
    _add(db, "a")
    with db.write() as session:
        repo.merge_metrics(session, "a", {"s1": {"image_type": {"accuracy": 0.5}}})
        repo.merge_metrics(session, "a", {"s2": {}, "s1": {"image_type": {"accuracy": 0.7}}})
    with db.read() as session:
        assert repo.get_version(session, "a").metrics == {
            "s1": {"image_type": {"accuracy": 0.7}},
            "s2": {},
        }


def _deployments(*steps: tuple[str, str]) -> list[DeploymentRow]:
    return [
        DeploymentRow(alias="production", version=v, reason=r, by="t", started_at=NOW)
        for v, r in steps
    ]


def test_rollback_target_replays_the_history_as_a_stack() -> None:
    assert repo.rollback_target(_deployments(("a", "initial"))) is None
    steps = [("a", "initial"), ("b", "promote"), ("c", "promote")]
    assert repo.rollback_target(_deployments(*steps)) == "b"
    steps.append(("b", "rollback"))
    assert repo.rollback_target(_deployments(*steps)) == "a"
    steps.append(("a", "rollback"))
    assert repo.rollback_target(_deployments(*steps)) is None
    steps.append(("d", "promote"))
    assert repo.rollback_target(_deployments(*steps)) == "a"
