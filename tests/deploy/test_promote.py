"""Promotion and rollback: the gates, ``force``, the load check, the candidate alias."""

from __future__ import annotations

import shutil

import pytest

from cartag.deploy.promote import point_candidate
from cartag.deploy.registry import record_metrics
from cartag.errors import ConflictError, ModelUnloadableError, NotFoundError
from cartag.gates import PromotionGatedError
from cartag.store import model_versions as repo
from tests.support.models import type_metrics
from tests.support.registry import (
    Scene,
    damage,
    promote,
    register,
    rollback,
)

GOOD = {"Dealer": 0.95, "Stock": 0.9, "Placeholder": 0.99}


def test_promotion_gates_and_force(scene: Scene) -> None:
    record_metrics(scene.db, scene.initial, type_metrics(GOOD))
    register(scene, "worse", metrics=type_metrics({**GOOD, "Stock": 0.80}))  # a 0.10 drop
    with pytest.raises(PromotionGatedError) as gated:
        promote(scene, "worse", by="alice")
    assert len(gated.value.failures) == 1 and "Stock" in gated.value.failures[0]
    assert gated.value.status_code == 409

    # No shared evaluation set: gated too, while production has metrics.
    register(scene, "unevaluated")
    with pytest.raises(PromotionGatedError, match="no evaluation set in common"):
        promote(scene, "unevaluated", by="alice")

    register(scene, "better", metrics=type_metrics({**GOOD, "Stock": 0.93}))
    scene.clock.advance(60)
    deployment = promote(scene, "better", by="alice")
    assert (deployment.version, deployment.reason, deployment.by) == ("better", "promote", "alice")
    with pytest.raises(ConflictError, match="already serves"):
        promote(scene, "better", by="alice")

    scene.clock.advance(60)
    assert promote(scene, "worse", by="bob", force=True).version == "worse"
    with scene.db.read() as session:
        rows = repo.history(session, "production")
    assert [(r.version, r.reason) for r in rows] == [
        (scene.initial, "initial"),
        ("better", "promote"),
        ("worse", "promote"),
    ]
    assert rows[0].ended_at == rows[1].started_at and rows[-1].ended_at is None
    with pytest.raises(NotFoundError):
        promote(scene, "nope", by="bob")


def test_candidate_alias_and_record_metrics(scene: Scene) -> None:
    register(scene, "cand")
    promote(scene, "cand", alias="candidate")
    record_metrics(scene.db, "cand", type_metrics(GOOD))
    record_metrics(scene.db, "cand", {"other:test": {"color": {"accuracy": 0.5}}})
    with scene.db.read() as session:
        candidate = repo.get_alias(session, "candidate")
        production = repo.get_alias(session, "production")
    assert candidate is not None and candidate.version == "cand"
    assert set(candidate.metrics) == {"cars@1:test", "other:test"}
    assert production is not None and production.version == scene.initial


def test_rollback_walks_back_through_the_promotions(scene: Scene) -> None:
    with pytest.raises(ConflictError, match="no earlier version"):
        rollback(scene)
    for name in ("b", "c"):
        register(scene, name)
        scene.clock.advance(1)
        promote(scene, name)
    scene.clock.advance(1)
    assert rollback(scene).version == "b"
    scene.clock.advance(1)
    back = rollback(scene)
    assert (back.version, back.reason) == (scene.initial, "rollback")
    with pytest.raises(ConflictError, match="no earlier version"):
        rollback(scene)


def test_promote_refuses_a_version_whose_files_broke_after_registration(scene: Scene) -> None:
    # Issue 13 item 13: promote used to check only the status, so servers were told to
    # switch to a model none of them could load.
    register(scene, "dmg")
    damage(scene, "dmg", "color_head.npz", keep=200)
    for force in (False, True):
        with pytest.raises(ModelUnloadableError, match="changed since it was registered") as exc:
            promote(scene, "dmg", force=force)
        assert exc.value.status_code == 409 and exc.value.code == "model_unloadable"
    with scene.db.read() as session:
        assert repo.alias_version(session, "production") == scene.initial
        assert len(repo.history(session, "production")) == 1
    # The folder is gone altogether: refused the same way.
    register(scene, "gone")
    shutil.rmtree(scene.settings.data_dir / "models" / "gone")
    with pytest.raises(ModelUnloadableError, match="missing"):
        promote(scene, "gone")


def test_rollback_refuses_a_version_whose_files_broke_and_leaves_the_alias(scene: Scene) -> None:
    # A rollback onto damaged files used to succeed: the registry named a model no server
    # could load, and every server went on serving the one rolled back from.
    for name in ("b", "c"):
        register(scene, name)
        scene.clock.advance(1)
        promote(scene, name)
    damage(scene, "b", "color_head.npz", keep=200)
    with pytest.raises(ModelUnloadableError, match="cannot roll production back to b") as exc:
        rollback(scene)
    assert exc.value.status_code == 409 and "changed since it was registered" in exc.value.message
    with scene.db.read() as session:
        assert repo.alias_version(session, "production") == "c"
        assert [d.reason for d in repo.history(session, "production")][-1] == "promote"


def test_a_sweep_points_the_candidate_without_gates_and_again_is_a_no_op(scene: Scene) -> None:
    record_metrics(scene.db, scene.initial, type_metrics(GOOD))
    register(scene, "trial-3", metrics=type_metrics({**GOOD, "Stock": 0.5}))  # would be gated
    for _ in range(2):
        point_candidate(scene.db, "trial-3", by="cartag train", reason="sweep", clock=scene.clock)
    with scene.db.read() as session:
        assert repo.alias_version(session, "candidate") == "trial-3"
        [row] = repo.history(session, "candidate")
        assert repo.alias_version(session, "production") == scene.initial
    assert (row.reason, row.by) == ("sweep", "cartag train")
