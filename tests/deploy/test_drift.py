"""The drift report: the current window against a model version's first week, per version
and advertiser, from the rollup's drift sums."""

from __future__ import annotations

import datetime as dt

import pytest

from cartag.clock import FakeClock
from cartag.deploy.drift import (
    ALL_ADVERTISERS,
    DriftGauges,
    DriftReport,
    DriftThresholds,
    build_drift,
    drift_gauges,
    total_variation,
)
from cartag.settings import Settings
from cartag.store.db import Database
from tests.support.drift import START, day_answers, seed_days, week

TODAY = START + dt.timedelta(days=9)


def _report(db: Database, until: dt.date = TODAY, **changes: float) -> DriftReport:
    thresholds = DriftThresholds(**changes)  # type: ignore[arg-type]
    with db.read() as session:
        return build_drift(session, until=until, thresholds=thresholds)


def _scopes(report: DriftReport) -> dict[str | None, str]:
    (version,) = report.versions
    return {s.advertiser_id: s.state for s in [version.overall, *version.advertisers]}


def test_a_steady_fleet_is_ok(db: Database) -> None:
    for adv in ("a", "b"):
        seed_days(db, adv, [*week(), TODAY], day_answers(100, "m1"))
    report = _report(db)
    assert _scopes(report) == {None: "ok", "a": "ok", "b": "ok"}
    version = report.versions[0]
    assert (version.baseline_start, version.baseline_end) == (START, START + dt.timedelta(6))
    a = version.advertisers[0]
    assert a.current.far_share == pytest.approx(0.05)
    assert a.baseline.far_share == pytest.approx(0.05)
    assert a.current.mean_confidence == pytest.approx(0.95)
    assert a.type_tvd == pytest.approx(0) and a.confidence_delta == pytest.approx(0)


def test_images_from_another_source_drift_their_advertiser_only(db: Database) -> None:
    for adv in ("a", "b"):
        seed_days(db, adv, week(), day_answers(100, "m1"))
    seed_days(db, "a", [TODAY], day_answers(100, "m1", far_share=0.6, confidence=0.8))
    seed_days(db, "b", [TODAY], day_answers(100, "m1"))
    version = _report(db).versions[0]
    a, b = version.advertisers  # drifted first
    assert (a.advertiser_id, a.state, b.advertiser_id, b.state) == ("a", "drift", "b", "ok")
    assert a.current.far_share == pytest.approx(0.6)
    assert a.far_share_delta == pytest.approx(0.55)
    assert a.confidence_delta == pytest.approx(-0.15)
    assert any("share of far images" in r for r in a.reasons)
    assert any("mean confidence" in r for r in a.reasons)
    assert a.score > 1 and b.score < 1
    assert version.drifted == [a]
    # Over all advertisers, half the images are the shifted batch: far share 32.5%.
    assert version.overall.current.far_share == pytest.approx(0.325)
    assert version.overall.state == "drift"


def test_a_changed_answer_mix_is_drift_without_novelty(db: Database) -> None:
    """A model without a reference: judged on the mix and the confidence only."""
    seed_days(db, "a", week(), day_answers(100, "m1", novelty=False))
    seed_days(db, "a", [TODAY], day_answers(100, "m1", placeholder_share=0.5, novelty=False))
    scope = _report(db).versions[0].advertisers[0]
    assert scope.current.far_share is None and scope.far_share_delta is None
    assert scope.type_tvd == pytest.approx(0.5)
    assert scope.state == "drift"
    assert scope.reasons == [
        "type mix moved 0.500 (threshold 0.25)",
        "color mix moved 0.500 (threshold 0.25)",
    ]


def test_too_few_images_are_not_judged(db: Database) -> None:
    seed_days(db, "a", week(), day_answers(100, "m1"))
    seed_days(db, "a", [TODAY], day_answers(20, "m1", far_share=1.0))
    scope = _report(db).versions[0].advertisers[0]
    assert scope.state == "too few images"
    assert "20 images now" in scope.reasons[0]


def test_a_newcomer_is_compared_with_the_versions_baseline(db: Database) -> None:
    seed_days(db, "a", week(), day_answers(100, "m1"))
    seed_days(db, "new", [TODAY], day_answers(100, "m1", far_share=0.5))
    scopes = {s.advertiser_id: s for s in _report(db).versions[0].advertisers}
    assert scopes["new"].baseline_source == "all advertisers"
    assert scopes["new"].baseline.far_share == pytest.approx(0.05)
    assert scopes["new"].state == "drift"


def test_during_its_first_week_a_version_is_building_its_baseline(db: Database) -> None:
    seed_days(db, "a", week(), day_answers(100, "m1", far_share=0.5))
    report = _report(db, until=START + dt.timedelta(days=3))
    assert set(_scopes(report).values()) == {"baseline"}
    assert "runs until" in report.versions[0].overall.reasons[0]


def test_each_version_has_its_own_first_week(db: Database) -> None:
    seed_days(db, "a", week(), day_answers(100, "m1"))
    later = START + dt.timedelta(days=8)
    seed_days(db, "a", [later, TODAY], day_answers(100, "m2"), {"m2": 0.3})
    report = _report(db, current_days=2)
    by_version = {v.version: v for v in report.versions}
    assert by_version["m2"].baseline_start == later
    assert by_version["m2"].overall.state == "baseline"
    assert set(by_version) == {"m2"}  # m1 answered nothing in the current window


def test_total_variation() -> None:
    assert total_variation({"a": 1}, {"a": 5}) == 0
    assert total_variation({"a": 1}, {"b": 1}) == 1
    assert total_variation({"a": 3, "b": 1}, {"a": 1, "b": 1}) == pytest.approx(0.25)
    assert total_variation({}, {"a": 1}) is None


def test_the_gauges_export_each_version_and_its_most_drifted_advertisers_only(
    db: Database,
) -> None:
    for adv in ("a", "b", "c"):
        seed_days(db, adv, [*week(), TODAY], day_answers(100, "m1"))
    seed_days(db, "d", week(), day_answers(100, "m1"))
    seed_days(db, "d", [TODAY], day_answers(100, "m1", far_share=0.6))
    values = drift_gauges(_report(db), top_advertisers=2)
    flagged = values["cartag_drift_flagged"]
    assert set(flagged) == {("m1", ALL_ADVERTISERS), ("m1", "d"), ("m1", "a")}
    assert flagged[("m1", "d")] == 1 and flagged[("m1", "a")] == 0
    assert values["cartag_drift_far_share"][("m1", "d")] == pytest.approx(0.6)
    assert values["cartag_drift_images"][("m1", ALL_ADVERTISERS)] == 400


def test_the_gauges_are_computed_at_most_once_an_interval(db: Database) -> None:
    seed_days(db, "a", [*week(), TODAY], day_answers(100, "m1"))
    ticks = [0.0]
    settings = Settings(drift_metrics_interval_s=60)
    gauges = DriftGauges(
        db, settings, FakeClock(dt.datetime.combine(TODAY, dt.time(12), dt.UTC)), lambda: ticks[0]
    )
    first = gauges.read()
    assert first["cartag_drift_images"][("m1", "a")] == 100
    seed_days(db, "a", [TODAY], day_answers(100, "m1"))
    ticks[0] = 59
    assert gauges.read()["cartag_drift_images"][("m1", "a")] == 100  # the last figures
    ticks[0] = 60
    assert gauges.read()["cartag_drift_images"][("m1", "a")] == 200
