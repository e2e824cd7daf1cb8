"""The monitoring report: rollup, fix rates per version/day/advertiser, the jump rule."""

from __future__ import annotations

import datetime as dt
from collections import Counter

import pytest

from cartag.errors import InputError
from cartag.ops.daily import RollupBuffer, rollup
from cartag.ops.monitor import Thresholds, build_report, parse_since
from cartag.pipeline.results import ClassifyResult, skipped
from cartag.store.db import Database
from cartag.store.monitoring import record_counts
from cartag.store.tables import ClassifyDailyRow
from tests.ops.seed import SWITCH, TODAY, answers, seed_monitoring

NOW = dt.datetime.combine(TODAY, dt.time(15, 30), dt.UTC)


def test_parse_since() -> None:
    assert parse_since("7d", NOW) == TODAY - dt.timedelta(days=7)
    assert parse_since("24h", NOW) == TODAY - dt.timedelta(days=1)
    assert parse_since("2w", NOW) == TODAY - dt.timedelta(days=14)
    assert parse_since(" 2026-11-01 ", NOW) == dt.date(2026, 11, 1)
    for bad, words in [
        ("yesterday", "neither a period nor a date"),
        ("0d", "positive"),
        ("2026-12-01", "future"),
        ("900d", "more than"),
        ("7x", "neither"),
    ]:
        with pytest.raises(InputError, match=words) as info:
            parse_since(bad, NOW)
        assert info.value.field == "since"


def test_rollup_counts_answers_not_skips() -> None:
    results = [*answers(3, "m1"), skipped("https://x/1.jpg", "http_404")]
    counts = rollup(results)
    assert sum(counts.values()) == 3
    assert counts[("m1", "cached", "Placeholder", "", "cache")] == 1


def test_rollup_buffer_counts_in_memory_and_writes_on_flush(db: Database) -> None:
    buffer = RollupBuffer(db, interval_s=3600)  # the thread never fires during the test
    try:
        buffer.add(TODAY, "a", answers(6, "m1"))
        buffer.add(TODAY, "a", answers(3, "m1"))
        buffer.add(TODAY, "b", [skipped("u", "timeout")])
        with db.read() as session:
            assert session.query(ClassifyDailyRow).count() == 0  # nothing written yet
        assert buffer.flush() == 9
        assert buffer.flush() == 0
        buffer.add(TODAY, "b", answers(2, "m2"))
    finally:
        buffer.close()  # writes what is left
    totals: Counter[tuple[str, str]] = Counter()
    with db.read() as session:
        for r in session.query(ClassifyDailyRow).all():
            totals[(r.advertiser_id, r.model_version)] += r.count
    assert totals == {("a", "m1"): 9, ("b", "m2"): 2}


def test_rollup_buffer_without_interval_writes_at_once(db: Database) -> None:
    buffer = RollupBuffer(db, interval_s=0)
    buffer.add(TODAY, "a", answers(3, "m1"))
    with db.read() as session:
        assert sum(r.count for r in session.query(ClassifyDailyRow).all()) == 3
    buffer.close()


def test_record_counts_adds_up(db: Database) -> None:
    day = TODAY
    with db.write() as session:
        assert record_counts(session, day, "a", rollup(answers(6, "m1"))) == 6
    with db.write() as session:
        record_counts(session, day, "a", rollup(answers(3, "m1")))
        assert record_counts(session, day, "a", rollup([skipped("u", "timeout")])) == 0
    with db.read() as session:
        rows = session.query(ClassifyDailyRow).all()
    by_key = {(r.status, r.image_type, r.color): r.count for r in rows}
    # 9 answers: indexes 0,1,3,4 + 0,1 Dealer (Blue for even, Red for odd), 2,5 + 2 Placeholder.
    assert by_key == {
        ("classified", "Dealer", "Blue"): 3,
        ("classified", "Dealer", "Red"): 3,
        ("cached", "Placeholder", ""): 3,
    }


def test_report_rates_mix_and_jumps(db: Database) -> None:
    seed_monitoring(db)
    with db.read() as session:
        report = build_report(
            session, since=TODAY - dt.timedelta(days=6), until=TODAY, thresholds=Thresholds()
        )
    assert report.days[0] == TODAY - dt.timedelta(days=6) and report.days[-1] == TODAY
    assert report.versions == ["m2"]  # m1 stopped before the window

    today = report.cell("m2", TODAY)
    assert today is not None
    assert today.rate.classified == 300 + 300 + 300 + 50
    assert today.rate.fixes == 3 + 30 + 20 + 5
    assert today.types == {"Dealer": 634, "Placeholder": 316}
    assert today.colors["(none)"] == 316 and today.colors["Red"] + today.colors["Blue"] == 634

    by_id = {a.advertiser_id: a for a in report.advertisers}
    assert set(by_id) == {"steady", "jumpy", "newcomer", "small"}
    assert [a.advertiser_id for a in report.jumped] == ["jumpy", "newcomer"]
    jumpy, newcomer = by_id["jumpy"], by_id["newcomer"]
    assert jumpy.recent.rate == pytest.approx(0.10)
    assert jumpy.baseline.rate == pytest.approx(0.01) and jumpy.baseline_source == "own"
    assert newcomer.baseline_source == "all advertisers"
    assert report.fleet_baseline.fixes == 57 + 57 and report.fleet_baseline.classified == 12350
    steady = by_id["steady"]
    assert not steady.jumped and steady.verdict.startswith("steady")
    assert steady.total.rate == pytest.approx(0.01)
    assert len(steady.daily) == 7
    assert not by_id["small"].jumped and "too few" in by_id["small"].verdict


def test_report_per_version_and_advertiser_filter(db: Database) -> None:
    seed_monitoring(db)
    with db.read() as session:
        report = build_report(
            session,
            since=SWITCH - dt.timedelta(days=2),
            until=TODAY,
            thresholds=Thresholds(),
            advertiser="steady",
        )
    assert report.versions == ["m1", "m2"]
    before = report.cell("m1", SWITCH - dt.timedelta(days=1))
    after = report.cell("m2", SWITCH)
    assert before is not None and after is not None
    assert (before.rate.classified, before.rate.fixes) == (300, 3)
    assert (after.rate.classified, after.rate.fixes) == (300, 3)
    assert [a.advertiser_id for a in report.advertisers] == ["steady"]
    assert report.total.classified == 300 * len(report.days)


def test_thresholds_change_the_verdict(db: Database) -> None:
    seed_monitoring(db)
    strict = Thresholds(min_ratio=20.0)
    with db.read() as session:
        report = build_report(session, since=TODAY, until=TODAY, thresholds=strict)
    assert report.jumped == []
    assert "20×" in strict.explain()


def test_empty_store_gives_an_empty_report(db: Database) -> None:
    with db.read() as session:
        report = build_report(session, since=TODAY, until=TODAY, thresholds=Thresholds())
    assert report.advertisers == [] and report.versions == [] and report.total.rate is None


def test_a_day_answered_only_by_skips_writes_nothing(db: Database) -> None:
    results: list[ClassifyResult] = [skipped("https://x/1.jpg", "http_404")]
    with db.write() as session:
        assert record_counts(session, TODAY, "a", rollup(results)) == 0
    with db.read() as session:
        assert session.query(ClassifyDailyRow).count() == 0
