"""The daily monitoring rollup: answers counted in memory, written as adding upserts."""

from __future__ import annotations

from collections import Counter

from cartag.pipeline.results import ClassifyResult, skipped
from cartag.pipeline.rollups import RollupBuffer, rollup
from cartag.store.db import Database
from cartag.store.monitoring import record_counts
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
