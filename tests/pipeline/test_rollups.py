"""The daily monitoring rollup: answers counted in memory, written as adding upserts."""

from __future__ import annotations

from collections import Counter
from dataclasses import replace

import pytest

from cartag.pipeline.results import ClassifyResult, skipped
from cartag.pipeline.rollups import RollupBuffer, drift_sums, rollup
from cartag.store.db import Database
from cartag.store.monitoring import DriftSums, record_counts
from cartag.store.tables import ClassifyDailyRow
from tests.support.monitoring import TODAY, answers


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


def test_a_day_answered_only_by_skips_writes_nothing(db: Database) -> None:
    results: list[ClassifyResult] = [skipped("https://x/1.jpg", "http_404")]
    with db.write() as session:
        assert record_counts(session, TODAY, "a", rollup(results)) == 0
    with db.read() as session:
        assert session.query(ClassifyDailyRow).count() == 0


def _with_novelty(results: list[ClassifyResult], novelty: float) -> list[ClassifyResult]:
    return [replace(r, confidence=0.9, novelty=novelty) for r in results]


def test_drift_sums_count_confidence_novelty_and_far_answers_by_their_version() -> None:
    thresholds = {"m1": 0.3}
    results = [
        *_with_novelty(answers(4, "m1"), 0.2),
        *_with_novelty(answers(2, "m1"), 0.5),
        *_with_novelty(answers(3, "m0"), 0.9),  # a version of unknown threshold
        skipped("https://x/1.jpg", "http_404"),
    ]
    sums = drift_sums(results, thresholds.get)
    total = DriftSums()
    for tally in sums.values():
        total.add(tally)
    assert total.confidence_n == 9
    assert total.confidence_sum == pytest.approx(8.1)
    # m0's novelty is not counted: without its threshold its far share is unknown.
    assert (total.novelty_n, total.far_n) == (6, 2)
    assert total.novelty_sum == pytest.approx(4 * 0.2 + 2 * 0.5)
    assert set(sums) == set(rollup(results))


def test_the_drift_sums_are_written_and_added_with_the_counts(db: Database) -> None:
    buffer = RollupBuffer(db, interval_s=3600, far_threshold={"m1": 0.3}.get)
    try:
        buffer.add(TODAY, "a", _with_novelty(answers(3, "m1"), 0.5))
        buffer.add(TODAY, "a", _with_novelty(answers(3, "m1"), 0.1))
        buffer.add(TODAY, "a", answers(3, "m1"))  # no confidence, no novelty
        assert buffer.flush() == 9
    finally:
        buffer.close()
    with db.read() as session:
        rows = session.query(ClassifyDailyRow).all()
    assert sum(r.count for r in rows) == 9
    assert sum(r.confidence_n for r in rows) == 6
    assert sum(r.novelty_n for r in rows) == 6
    assert sum(r.far_n for r in rows) == 3
    assert sum(r.novelty_sum for r in rows) == pytest.approx(1.8)


def test_novelty_is_for_the_rollup_only_not_in_the_answer() -> None:
    result = replace(answers(1, "m1")[0], novelty=0.4)
    assert "novelty" not in result.to_dict()
    assert result == replace(result, novelty=None)  # nor part of an answer's identity
