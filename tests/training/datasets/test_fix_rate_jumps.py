"""The fix-rate jump rule of dataset candidates, on real rollup and fix audit rows."""

from __future__ import annotations

import datetime as dt

import pytest

from cartag.settings import Settings
from cartag.store.db import Database
from cartag.training.datasets.fix_rate_jumps import JumpRule, fix_rate_jumps, window_start
from tests.support.candidates import daily, fix_rate_history

TODAY = dt.date(2026, 11, 26)
RECENT = window_start(TODAY, 7)  # 2026-11-20
BASELINE = RECENT - dt.timedelta(days=28)
BEFORE = RECENT - dt.timedelta(days=1)


def test_only_advertisers_whose_own_rate_jumped_are_found(db: Database) -> None:
    # 1% every day: steady.
    fix_rate_history(db, "steady", daily(BASELINE, TODAY, 100, 1))
    # 1% for four weeks, then 3% this week: jumped.
    fix_rate_history(db, "jumpy", daily(BASELINE, BEFORE, 100, 1) | daily(RECENT, TODAY, 100, 3))
    # No fixes at all before, 3 this week: a zero baseline jumps on the fixes alone.
    fix_rate_history(
        db, "clean", daily(BASELINE, BEFORE, 100, 0) | {RECENT: (100, 1), TODAY: (600, 2)}
    )
    # Only two fixes this week: below the minimum.
    fix_rate_history(db, "few", daily(BASELINE, BEFORE, 100, 0) | {TODAY: (700, 2)})
    # A newcomer: no history of its own to jump from.
    fix_rate_history(db, "newcomer", daily(RECENT, TODAY, 100, 5))
    # Too few answers this week to judge.
    fix_rate_history(db, "small", daily(BASELINE, BEFORE, 100, 0) | daily(RECENT, TODAY, 5, 1))
    # Its bad week ended the day before the window: that is baseline, not recent.
    fix_rate_history(db, "past", daily(BASELINE, BEFORE, 100, 5) | daily(RECENT, TODAY, 100, 1))

    with db.read() as session:
        jumps = fix_rate_jumps(session, JumpRule(), TODAY)
    assert [j.advertiser_id for j in jumps] == ["jumpy", "clean"]
    jumpy = jumps[0]
    assert (jumpy.recent_answers, jumpy.recent_fixes) == (700, 21)
    assert (jumpy.baseline_answers, jumpy.baseline_fixes) == (2800, 28)
    assert jumpy.recent_rate == pytest.approx(0.03) and jumpy.baseline_rate == pytest.approx(0.01)
    record = jumpy.record()
    assert record["recent"] == {"answers": 700, "fixes": 21, "rate": 0.03}
    assert record["baseline"] == {"answers": 2800, "fixes": 28, "rate": 0.01}

    # A shorter window and a higher bar change the verdict.
    with db.read() as session:
        strict = fix_rate_jumps(session, JumpRule(ratio=4.0), TODAY)
        one_day = fix_rate_jumps(session, JumpRule(recent_days=1, min_fixes=1), TODAY)
    assert [j.advertiser_id for j in strict] == ["clean"]
    assert {j.advertiser_id for j in one_day} == {"jumpy", "clean", "few"}


def test_rule_from_settings(settings: Settings) -> None:
    changed = settings.model_copy(
        update={
            "dataset_candidate_recent_days": 3,
            "dataset_candidate_baseline_days": 14,
            "dataset_candidate_min_answers": 10,
            "dataset_candidate_min_fixes": 2,
            "dataset_candidate_jump_ratio": 3.0,
        }
    )
    assert JumpRule.from_settings(changed) == JumpRule(3, 14, 10, 2, 3.0)
    assert JumpRule.from_settings(changed, recent_days=5).recent_days == 5
    assert "3x its own over the 14 days before" in JumpRule.from_settings(changed).explain()
