"""Drift: how far today's images sit from what a model version saw in its first week.

Per model version, and per advertiser within it, the report compares the **current**
window (the last ``current_days`` UTC days up to today) with the **baseline**: the first
``baseline_days`` days from the version's first answer (its first day in the
``classify_daily`` rollup), when it served the images its training reference was
measured against as well as anything will be. Figures, from the rollup's drift sums
(:mod:`cartag.pipeline.rollups`):

* **far share**: images whose novelty (cosine distance to the nearest centroid of the
  version's training reference, :mod:`cartag.models.reference`) exceeds the version's
  far threshold (the held-out p95, so about 5% of in-distribution images), over the
  images with a novelty; and its baseline;
* **mean novelty** and **mean confidence** (and their change);
* the **total-variation distance** between the current and baseline answer mix, for
  the type and for the color (½ Σ |p − q|: 0 same mix, 1 disjoint).

A scope is **drift** when its far share rose by at least ``far_share_increase``, a mix
moved by at least ``mix_tvd``, or its mean confidence fell by at least
``confidence_drop``; **ok** otherwise; **too few images** when either window has fewer
than ``min_images`` answers; **baseline** while the current window still overlaps the
baseline week. An advertiser with fewer than ``min_images`` answers in the baseline
week is compared with the version's baseline (all advertisers), like a newcomer. A
version without a reference has no novelty: its far share is unknown and only the mix
and the confidence are judged.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Literal

from sqlalchemy.orm import Session

from cartag.clock import Clock
from cartag.settings import Settings
from cartag.store import monitoring
from cartag.store.db import Database
from cartag.store.monitoring import DriftCell, DriftSums
from cartag.telemetry.prometheus import DriftValues

log = logging.getLogger(__name__)

DriftState = Literal["ok", "drift", "too few images", "baseline"]
NO_LABEL = "(none)"
# The ``advertiser`` label of a version's figures over all advertisers.
ALL_ADVERTISERS = "(all)"


@dataclass(frozen=True)
class DriftThresholds:
    """The windows and the rule of the module docstring."""

    baseline_days: int = 7
    current_days: int = 1
    min_images: int = 50
    far_share_increase: float = 0.10
    mix_tvd: float = 0.25
    confidence_drop: float = 0.10

    @classmethod
    def from_settings(cls, settings: Settings) -> DriftThresholds:
        return cls(
            baseline_days=settings.drift_baseline_days,
            current_days=settings.drift_current_days,
            min_images=settings.drift_min_images,
            far_share_increase=settings.drift_far_share_increase,
            mix_tvd=settings.drift_mix_tvd,
            confidence_drop=settings.drift_confidence_drop,
        )

    def explain(self) -> str:
        return (
            f"the last {self.current_days} day(s) against the first {self.baseline_days} "
            "days of the model version; drift when the share of images far from the "
            f"training data rose by {self.far_share_increase * 100:g} points or more, the "
            f"type or color mix moved by a total-variation distance of {self.mix_tvd:g} "
            f"or more, or the mean confidence fell by {self.confidence_drop:g} or more; "
            f"judged with at least {self.min_images} images in each window"
        )


@dataclass
class Window:
    """The answers of one scope over one window."""

    images: int = 0
    sums: DriftSums = field(default_factory=DriftSums)
    types: dict[str, int] = field(default_factory=dict)
    colors: dict[str, int] = field(default_factory=dict)

    def add(self, cell: DriftCell) -> None:
        self.images += cell.count
        self.sums.add(cell.sums)
        image_type, color = cell.image_type or NO_LABEL, cell.color or NO_LABEL
        self.types[image_type] = self.types.get(image_type, 0) + cell.count
        self.colors[color] = self.colors.get(color, 0) + cell.count

    @property
    def far_share(self) -> float | None:
        """Far images ÷ images with a novelty (None: none has one)."""
        n = self.sums.novelty_n
        return self.sums.far_n / n if n else None

    @property
    def mean_novelty(self) -> float | None:
        n = self.sums.novelty_n
        return self.sums.novelty_sum / n if n else None

    @property
    def mean_confidence(self) -> float | None:
        n = self.sums.confidence_n
        return self.sums.confidence_sum / n if n else None


def total_variation(p: dict[str, int], q: dict[str, int]) -> float | None:
    """½ Σ |p − q| between two count mixes (None when either is empty)."""
    np_, nq = sum(p.values()), sum(q.values())
    if not np_ or not nq:
        return None
    labels = set(p) | set(q)
    return 0.5 * sum(abs(p.get(k, 0) / np_ - q.get(k, 0) / nq) for k in labels)


@dataclass
class DriftScope:
    """One model version, overall or for one advertiser, with its verdict.

    Attributes:
        version: The model version.
        advertiser_id: None for the version over all advertisers.
        current: The current window.
        baseline: The baseline compared with (the advertiser's own, or the version's).
        baseline_source: ``own`` or ``all advertisers``.
        state: See the module docstring.
        reasons: Why it is ``drift`` (empty otherwise), or why it is not judged.
        score: How far past its thresholds the largest figure is (ranks advertisers;
            1.0 = exactly at a threshold; 0 when not judged).
    """

    version: str
    advertiser_id: str | None
    current: Window
    baseline: Window
    baseline_source: str = "own"
    state: DriftState = "ok"
    reasons: list[str] = field(default_factory=list)
    score: float = 0.0

    @property
    def type_tvd(self) -> float | None:
        return total_variation(self.current.types, self.baseline.types)

    @property
    def color_tvd(self) -> float | None:
        return total_variation(self.current.colors, self.baseline.colors)

    @property
    def confidence_delta(self) -> float | None:
        now, then = self.current.mean_confidence, self.baseline.mean_confidence
        return None if now is None or then is None else now - then

    @property
    def far_share_delta(self) -> float | None:
        now, then = self.current.far_share, self.baseline.far_share
        return None if now is None or then is None else now - then


@dataclass
class DriftVersion:
    """A model version's drift: overall, and per advertiser (most drifted first)."""

    version: str
    baseline_start: dt.date
    baseline_end: dt.date
    overall: DriftScope
    advertisers: list[DriftScope]

    @property
    def drifted(self) -> list[DriftScope]:
        return [s for s in self.advertisers if s.state == "drift"]


@dataclass
class DriftReport:
    """Every model version that answered in the current window."""

    current_start: dt.date
    until: dt.date
    thresholds: DriftThresholds
    versions: list[DriftVersion]


def judge(scope: DriftScope, th: DriftThresholds) -> None:
    """Set ``state``, ``reasons`` and ``score`` by the rule of the module docstring."""
    if scope.current.images < th.min_images or scope.baseline.images < th.min_images:
        scope.state = "too few images"
        scope.reasons = [
            f"{scope.current.images} images now, {scope.baseline.images} in the baseline "
            f"(at least {th.min_images} each)"
        ]
        return
    checks: list[tuple[float | None, float, str]] = [
        (scope.far_share_delta, th.far_share_increase, "share of far images rose"),
        (scope.type_tvd, th.mix_tvd, "type mix moved"),
        (scope.color_tvd, th.mix_tvd, "color mix moved"),
        (
            None if scope.confidence_delta is None else -scope.confidence_delta,
            th.confidence_drop,
            "mean confidence fell",
        ),
    ]
    ratios = [value / limit for value, limit, _ in checks if value is not None]
    scope.score = max(ratios, default=0.0)
    scope.reasons = [
        f"{what} {value:.3f} (threshold {limit:g})"
        for value, limit, what in checks
        if value is not None and value >= limit
    ]
    scope.state = "drift" if scope.reasons else "ok"


def _windows(cells: Iterable[DriftCell]) -> tuple[Window, dict[str, Window]]:
    overall = Window()
    per: defaultdict[str, Window] = defaultdict(Window)
    for cell in cells:
        overall.add(cell)
        per[cell.advertiser_id].add(cell)
    return overall, dict(per)


def build_drift(
    session: Session,
    *,
    until: dt.date,
    thresholds: DriftThresholds,
    advertiser: str | None = None,
) -> DriftReport:
    """The drift of every model version that answered in the current window.

    Args:
        session: A read session.
        until: The last UTC day (normally today).
        thresholds: Windows and rule.
        advertiser: List this advertiser only (each version's overall figures stay).

    Returns:
        Versions by name; within each, advertisers drifted first, then by score.
    """
    start = until - dt.timedelta(days=thresholds.current_days - 1)
    current_cells = list(monitoring.drift_cells(session, start, until))
    versions = sorted({c.model_version for c in current_cells if c.model_version})
    firsts = monitoring.first_days(session, versions)
    report = DriftReport(start, until, thresholds, [])
    for version in versions:
        first = firsts.get(version, start)
        baseline_end = first + dt.timedelta(days=thresholds.baseline_days - 1)
        now_all, now_per = _windows(c for c in current_cells if c.model_version == version)
        base_all, base_per = _windows(monitoring.drift_cells(session, first, baseline_end, version))
        overall = DriftScope(version, None, now_all, base_all, "version")
        scopes = [overall]
        for adv, window in now_per.items():
            if advertiser is not None and adv != advertiser:
                continue
            own = base_per.get(adv)
            if own is not None and own.images >= thresholds.min_images:
                scopes.append(DriftScope(version, adv, window, own, "own"))
            else:
                scopes.append(DriftScope(version, adv, window, base_all, "all advertisers"))
        for scope in scopes:
            if start <= baseline_end:
                scope.state = "baseline"
                scope.reasons = [f"the baseline week runs until {baseline_end}"]
            else:
                judge(scope, thresholds)
        advertisers = sorted(
            scopes[1:],
            key=lambda s: (s.state != "drift", -s.score, s.advertiser_id or ""),
        )
        report.versions.append(DriftVersion(version, first, baseline_end, overall, advertisers))
    return report


def drift_now(
    session: Session, settings: Settings, now: dt.datetime, advertiser: str | None = None
) -> DriftReport:
    """:func:`build_drift` up to today, with the thresholds of ``settings``."""
    return build_drift(
        session,
        until=now.astimezone(dt.UTC).date(),
        thresholds=DriftThresholds.from_settings(settings),
        advertiser=advertiser,
    )


def drift_gauges(report: DriftReport, top_advertisers: int) -> DriftValues:
    """The /metrics drift gauges of a report.

    Label cardinality stays bounded: per model version answering now, its overall figures
    (``advertiser="(all)"``) and those of its ``top_advertisers`` most drifted advertisers.
    A figure that is unknown (no novelty, an empty window) is left out; ``flagged`` is 0
    for a scope not judged (too few images, baseline week).
    """
    values: DriftValues = defaultdict(dict)
    for version in report.versions:
        for scope in [version.overall, *version.advertisers[:top_advertisers]]:
            key = (version.version, scope.advertiser_id or ALL_ADVERTISERS)
            figures = {
                "cartag_drift_images": float(scope.current.images),
                "cartag_drift_far_share": scope.current.far_share,
                "cartag_drift_far_share_baseline": scope.baseline.far_share,
                "cartag_drift_mean_novelty": scope.current.mean_novelty,
                "cartag_drift_confidence_delta": scope.confidence_delta,
                "cartag_drift_type_mix_tvd": scope.type_tvd,
                "cartag_drift_color_mix_tvd": scope.color_tvd,
                "cartag_drift_flagged": float(scope.state == "drift"),
            }
            for name, value in figures.items():
                if value is not None:
                    values[name][key] = float(value)
    return dict(values)


class DriftGauges:
    """The drift gauges, computed from the store at most every ``interval_s`` seconds.

    Read at scrape time (never on a classify request); between computations the last
    figures are served. A failed computation is logged and the last figures kept.

    Args:
        db: The store.
        settings: Thresholds, ``drift_metrics_interval_s`` and ``drift_metrics_advertisers``.
        clock: Today's date.
        monotonic: Seconds for the interval (tests pass a fake).
    """

    def __init__(
        self,
        db: Database,
        settings: Settings,
        clock: Clock,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.db = db
        self.settings = settings
        self.clock = clock
        self._monotonic = monotonic
        self._lock = threading.Lock()
        self._values: DriftValues = {}
        self._computed_at: float | None = None

    def read(self) -> DriftValues:
        """The figures, recomputed first when older than the interval."""
        with self._lock:
            now = self._monotonic()
            stale = (
                self._computed_at is None
                or now - self._computed_at >= self.settings.drift_metrics_interval_s
            )
            if stale:
                self._computed_at = now
                try:
                    with self.db.read() as session:
                        report = drift_now(session, self.settings, self.clock.now())
                    self._values = drift_gauges(report, self.settings.drift_metrics_advertisers)
                except Exception:  # noqa: BLE001 - metrics must not fail; retried next interval
                    log.exception("could not compute the drift gauges")
            return self._values
