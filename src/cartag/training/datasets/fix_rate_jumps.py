"""Which advertisers' fix rate jumped: the rule behind ``--candidates fix-rate-jump``.

An advertiser's fix rate is the monitor's (:mod:`cartag.deploy.monitor`): fixes in its
name in the fix audit (by the fix's UTC day) ÷ answers it got in the daily rollup, read by
the same queries (:mod:`cartag.store.monitoring`). It has **jumped** when, over the
recent window (``recent_days`` days, today included),

* it got at least ``min_answers`` answers and has at least ``min_fixes`` fixes, and
* its own baseline (the ``baseline_days`` days before) had at least ``min_answers``
  answers, and
* ``recent rate >= ratio × baseline rate`` (a zero baseline jumps on the fixes alone).

Unlike the monitor, which compares a newcomer with the whole fleet to raise an alarm,
this rule uses only the advertiser's own history: a dataset wants the images of a
*change* in how the model does for someone, and a newcomer has nothing to change from.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from sqlalchemy.orm import Session

from cartag.settings import Settings
from cartag.store import monitoring


@dataclass(frozen=True)
class JumpRule:
    """When an advertiser's fix rate counts as jumped (module docstring)."""

    recent_days: int = 7
    baseline_days: int = 28
    min_answers: int = 50
    min_fixes: int = 3
    ratio: float = 2.0

    @classmethod
    def from_settings(cls, settings: Settings, recent_days: int | None = None) -> JumpRule:
        return cls(
            recent_days=recent_days or settings.dataset_candidate_recent_days,
            baseline_days=settings.dataset_candidate_baseline_days,
            min_answers=settings.dataset_candidate_min_answers,
            min_fixes=settings.dataset_candidate_min_fixes,
            ratio=settings.dataset_candidate_jump_ratio,
        )

    def explain(self) -> str:
        return (
            f"over the last {self.recent_days} day(s): {self.min_answers}+ answers, "
            f"{self.min_fixes}+ fixes and a fix rate {self.ratio:g}x its own over the "
            f"{self.baseline_days} days before ({self.min_answers}+ answers)"
        )


@dataclass
class Jump:
    """One advertiser's fix rate over the recent window and its baseline."""

    advertiser_id: str
    recent_answers: int = 0
    recent_fixes: int = 0
    baseline_answers: int = 0
    baseline_fixes: int = 0

    @property
    def recent_rate(self) -> float:
        return self.recent_fixes / self.recent_answers if self.recent_answers else 0.0

    @property
    def baseline_rate(self) -> float:
        return self.baseline_fixes / self.baseline_answers if self.baseline_answers else 0.0

    def jumped(self, rule: JumpRule) -> bool:
        return (
            self.recent_answers >= rule.min_answers
            and self.baseline_answers >= rule.min_answers
            and self.recent_fixes >= rule.min_fixes
            and self.recent_rate >= rule.ratio * self.baseline_rate
        )

    def record(self) -> dict[str, Any]:
        return {
            "advertiser_id": self.advertiser_id,
            "recent": {
                "answers": self.recent_answers,
                "fixes": self.recent_fixes,
                "rate": round(self.recent_rate, 6),
            },
            "baseline": {
                "answers": self.baseline_answers,
                "fixes": self.baseline_fixes,
                "rate": round(self.baseline_rate, 6),
            },
        }


def window_start(today: dt.date, days: int) -> dt.date:
    """First UTC day of a window of ``days`` days ending today."""
    return today - dt.timedelta(days=days - 1)


def fix_rate_jumps(session: Session, rule: JumpRule, today: dt.date) -> list[Jump]:
    """Advertisers whose fix rate jumped by ``rule``, the biggest recent rate first.

    Args:
        session: A read session.
        rule: The jump rule.
        today: The last UTC day of the recent window.
    """
    recent_start = window_start(today, rule.recent_days)
    baseline_start = recent_start - dt.timedelta(days=rule.baseline_days)
    per: dict[str, Jump] = {}

    def of(advertiser_id: str) -> Jump:
        return per.setdefault(advertiser_id, Jump(advertiser_id))

    for day, adv, _, n in monitoring.answers_per_advertiser(session, baseline_start, today):
        if day >= recent_start:
            of(adv).recent_answers += n
        else:
            of(adv).baseline_answers += n
    for day, adv, _ in monitoring.fixes_between(session, baseline_start, today):
        if day >= recent_start:
            of(adv).recent_fixes += 1
        else:
            of(adv).baseline_fixes += 1
    jumps = [j for j in per.values() if j.jumped(rule)]
    jumps.sort(key=lambda j: (-j.recent_rate, j.advertiser_id))
    return jumps
