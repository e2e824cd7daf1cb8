"""Registry tables: aliases and deployment history, advertiser settings and images."""

from __future__ import annotations

import datetime as dt

import pytest

from cartag.clock import FakeClock
from cartag.errors import ConflictError, InputError, NotFoundError
from cartag.pipeline import fixes as fix_service
from cartag.store import jobs as job_repo
from cartag.store import registry as repo
from cartag.store.db import Database
from cartag.store.tables import DeploymentRow
from tests.support.factories import NOW, add_image


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


def test_advertiser_settings(db: Database) -> None:
    with db.write() as session:
        repo.set_advertiser(session, "42", reclassify_on_promote=True, now=NOW)
        repo.set_advertiser(session, "7", reclassify_on_promote=True, now=NOW)
        row = repo.set_advertiser(session, "7", reclassify_on_promote=False, now=NOW)
        assert row.reclassify_on_promote is False
    with db.read() as session:
        assert [r.advertiser_id for r in repo.list_advertisers(session)] == ["42", "7"]
        assert repo.reclassify_advertisers(session) == ["42"]
        assert repo.opted_in(session, "42") and not repo.opted_in(session, "7")
        assert not repo.opted_in(session, "unknown")


def test_advertiser_images_come_from_classify_jobs_and_fixes(db: Database) -> None:
    seen, fixed, in_job, other = (add_image(db) for _ in range(4))
    with db.write() as session:
        repo.record_advertiser_images(session, "42", [seen.image_key], NOW)
        repo.record_advertiser_images(session, "42", [seen.image_key], NOW)  # upsert
        repo.record_advertiser_images(session, "9", [other.image_key], NOW)
        fix_service.apply_fix(
            session,
            image_key=fixed.image_key,
            advertiser_id="42",
            scope="advertiser",
            user="alice",
            image_type=None,
            color="Blue",
            comment=None,
            clock=FakeClock(NOW),
        )
        job = job_repo.create_job(
            session, advertiser_id="42", items=[(in_job.url, None)], callback_url=None, now=NOW
        )
        job_repo.store_results(session, job.id, {0: {"image_key": in_job.image_key}})
    with db.read() as session:
        keys = repo.advertiser_image_keys(session, "42")
    assert keys == {seen.image_key, fixed.image_key, in_job.image_key}
