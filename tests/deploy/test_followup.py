"""What follows a deployment: re-classification or not, a refusal here, whose images."""

from __future__ import annotations

import pytest

from cartag.deploy.followup import (
    Followup,
    advertisers_to_run,
    plan,
    reclassify_follows,
    refusal,
)
from cartag.deploy.promote import rollback
from cartag.errors import ConflictError
from cartag.store import advertisers as advertiser_repo
from cartag.store.model_versions import REFUSED, set_status
from tests.support.registry import Scene, promote, register


def test_only_a_production_deployment_is_followed_and_only_when_enabled(scene: Scene) -> None:
    register(scene, "c")
    candidate = promote(scene, "c", alias="candidate")
    production = promote(scene, "c")
    assert reclassify_follows(production, True)
    assert not reclassify_follows(production, False)
    assert not reclassify_follows(candidate, True)
    assert refusal(scene.db, candidate, serving=scene.initial) is None
    assert refusal(scene.db, production, serving="c") is None


def test_a_version_this_server_could_not_load_is_named_with_the_reason(scene: Scene) -> None:
    register(scene, "d")
    deployment = promote(scene, "d")
    with scene.db.write() as session:
        set_status(session, "d", REFUSED, "the heads are corrupt")
    assert refusal(scene.db, deployment, serving=scene.initial) == (
        f"d failed to load here and is refused (the heads are corrupt); "
        f"{scene.initial} keeps serving"
    )


def test_the_advertisers_to_run_are_those_that_opted_in(scene: Scene) -> None:
    assert advertisers_to_run(scene.db, None) == []
    with scene.db.write() as session:
        advertiser_repo.set_advertiser(
            session, "42", reclassify_on_promote=True, now=scene.clock.now()
        )
        advertiser_repo.set_advertiser(
            session, "7", reclassify_on_promote=False, now=scene.clock.now()
        )
    assert advertisers_to_run(scene.db, None) == ["42"]
    assert advertisers_to_run(scene.db, "42") == ["42"]
    with pytest.raises(ConflictError, match="has not opted in"):
        advertisers_to_run(scene.db, "7")


def test_a_promotion_and_a_rollback_plan_the_same_reclassification(scene: Scene) -> None:
    register(scene, "e")
    promoted = promote(scene, "e")
    assert plan(scene.db, promoted, True) == Followup("e", [], run=False)
    with scene.db.write() as session:
        advertiser_repo.set_advertiser(
            session, "42", reclassify_on_promote=True, now=scene.clock.now()
        )
    rolled_back = rollback(scene.db, scene.settings, by="ops", clock=scene.clock)
    for deployment in (promoted, rolled_back):
        due = plan(scene.db, deployment, True)
        assert (due.advertisers, due.run, due.command) == (["42"], True, None)
        skipped = plan(scene.db, deployment, False)
        assert (skipped.run, skipped.command) == (False, "cartag models reclassify")
    assert plan(scene.db, rolled_back, True).version == scene.initial
    candidate = promote(scene, "e", alias="candidate")
    assert plan(scene.db, candidate, True) == Followup("e", [], run=False)
