"""The monitoring report: answer mix and manual-fix rate per model version, day and advertiser.

Figures come from two tables: ``classify_daily`` (answers given per UTC day, advertiser
and model version) and ``fix_audit`` (every manual fix, with the advertiser who made it;
its model version is that of the fixed image's stored answer). The fix rate of a cell is
fixed images ÷ answered images of that cell: an image fixed twice in a day (a mis-click
corrected) counts once.

An advertiser's fix rate has **jumped** when, over the last ``recent_days`` days,

* it got at least ``min_volume`` answers, and
* its fix rate is at least ``min_ratio`` × its baseline rate **and** at least
  ``min_increase`` above it,

where the baseline is the advertiser's own rate over the ``baseline_days`` days before,
or, if it had fewer than ``min_volume`` answers then, the rate of all advertisers over
that period. The seed system's weakness is a good overall accuracy hiding some
advertisers with many errors and a slow decay: this rule flags both a sudden rise and a
newcomer far worse than the fleet.

The page (``/monitor``) and ``cartag monitor report`` show the same :class:`MonitorReport`.
"""

from __future__ import annotations

import datetime as dt
import re
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field

from sqlalchemy.orm import Session

from cartag.errors import InputError
from cartag.settings import Settings
from cartag.store import monitoring

MAX_DAYS = 400
# ASCII digits only: \d (and int()) also take other scripts' digits, such as "٣d".
_RELATIVE = re.compile(r"([0-9]{1,4})([hdw])")
_DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")
# What to write instead, said by every refusal of a since value (the CLI and /monitor).
SINCE_FORMS = "write 24h, 7d or 2w (up to 4 digits 0-9), or a date as YYYY-MM-DD such as 2026-11-30"
_UNITS = {"h": dt.timedelta(hours=1), "d": dt.timedelta(days=1), "w": dt.timedelta(weeks=1)}
# Images whose version is unknown (rows written before the rollup existed, or odd rows).
UNKNOWN_VERSION = "(unknown)"
NO_COLOR = "(none)"


def parse_since(text: str, now: dt.datetime) -> dt.date:
    """The first UTC day of a report from ``7d``, ``24h``, ``2w`` or ``2026-11-30``.

    The one check of these forms for the CLI's ``--since``, :func:`report_since` and the
    /monitor page: a period is 1 to 4 ASCII digits and ``h``, ``d`` or ``w`` (either case);
    a date is ``YYYY-MM-DD`` and a day of the calendar. Other forms ``date.fromisoformat``
    reads (``20261130``, week dates such as ``2026-W48``) and digits of other scripts are
    refused: the README and the page's schema state these two forms only.

    Raises:
        InputError: Unreadable, in the future, or more than ``MAX_DAYS`` ago.
    """
    value = text.strip().lower()
    today = now.astimezone(dt.UTC).date()
    match = _RELATIVE.fullmatch(value)
    if match:
        amount = int(match.group(1))
        if amount <= 0:
            raise InputError(
                f"--since {text!r}: the period must be positive; {SINCE_FORMS}", field="since"
            )
        since = (now - amount * _UNITS[match.group(2)]).astimezone(dt.UTC).date()
    elif _DATE.fullmatch(value):
        try:
            since = dt.date.fromisoformat(value)
        except ValueError as exc:
            raise InputError(
                f"--since {text!r} is not a day of the calendar ({exc}); {SINCE_FORMS}",
                field="since",
            ) from None
        if since > today:
            raise InputError(
                f"--since {text!r} is after the report's last day ({today}); the first day "
                "can be that day at most",
                field="since",
            )
    else:
        raise InputError(
            f"--since {text!r} is neither a period nor a date; {SINCE_FORMS}", field="since"
        )
    if (today - since).days > MAX_DAYS:
        raise InputError(
            f"--since {text!r} reaches back more than {MAX_DAYS} days; pick a shorter period",
            field="since",
        )
    return since


@dataclass(frozen=True)
class Thresholds:
    """When an advertiser's fix rate counts as jumped (see the module docstring)."""

    recent_days: int = 2
    baseline_days: int = 28
    min_volume: int = 200
    min_ratio: float = 2.0
    min_increase: float = 0.02

    @classmethod
    def from_settings(cls, settings: Settings) -> Thresholds:
        return cls(
            recent_days=settings.monitor_recent_days,
            baseline_days=settings.monitor_baseline_days,
            min_volume=settings.monitor_min_volume,
            min_ratio=settings.monitor_jump_ratio,
            min_increase=settings.monitor_jump_min_increase,
        )

    def explain(self) -> str:
        return (
            f"flagged when, over the last {self.recent_days} day(s), the advertiser got at "
            f"least {self.min_volume} answers and its fix rate is at least "
            f"{self.min_ratio:g}× its baseline and at least {self.min_increase * 100:g} "
            f"points above it; the baseline is its own rate over the {self.baseline_days} "
            f"days before (or, with fewer than {self.min_volume} answers then, the rate "
            "of all advertisers)"
        )


@dataclass
class Rate:
    """Fixes ÷ answered images of one cell."""

    classified: int = 0
    fixes: int = 0

    @property
    def rate(self) -> float | None:
        return self.fixes / self.classified if self.classified else None

    def add(self, other: Rate) -> None:
        self.classified += other.classified
        self.fixes += other.fixes


@dataclass
class VersionDay:
    """One model version on one day: its answer mix and fix rate."""

    version: str
    day: dt.date
    rate: Rate = field(default_factory=Rate)
    types: dict[str, int] = field(default_factory=dict)
    colors: dict[str, int] = field(default_factory=dict)


@dataclass
class AdvertiserStats:
    """One advertiser over the report window, with its jump verdict."""

    advertiser_id: str
    total: Rate = field(default_factory=Rate)
    daily: dict[dt.date, Rate] = field(default_factory=dict)
    versions: dict[str, Rate] = field(default_factory=dict)
    recent: Rate = field(default_factory=Rate)
    baseline: Rate = field(default_factory=Rate)
    baseline_source: str = "own"
    jumped: bool = False
    verdict: str = ""


@dataclass
class MonitorReport:
    """Everything the monitor page and ``cartag monitor report`` show."""

    since: dt.date
    until: dt.date
    thresholds: Thresholds
    advertiser: str | None
    days: list[dt.date]
    versions: list[str]
    version_days: list[VersionDay]
    advertisers: list[AdvertiserStats]
    total: Rate
    fleet_baseline: Rate

    @property
    def jumped(self) -> list[AdvertiserStats]:
        return [a for a in self.advertisers if a.jumped]

    def cell(self, version: str, day: dt.date) -> VersionDay | None:
        for vd in self.version_days:
            if vd.version == version and vd.day == day:
                return vd
        return None


def _version(value: str | None) -> str:
    return value or UNKNOWN_VERSION


def _fixes(session: Session, start: dt.date, until: dt.date) -> Iterable[tuple[dt.date, str, str]]:
    """(UTC day, advertiser, model version) of each image fixed in [start, until], per day."""
    for day, advertiser_id, version in monitoring.fixes_between(session, start, until):
        yield day, advertiser_id, _version(version)


def build_report(
    session: Session,
    *,
    since: dt.date,
    until: dt.date,
    thresholds: Thresholds,
    advertiser: str | None = None,
) -> MonitorReport:
    """Aggregate the rollup and the fix audit into a report.

    Args:
        session: A read session.
        since: First UTC day shown.
        until: Last UTC day shown (normally today).
        thresholds: The jump rule.
        advertiser: Restrict the per-version mix and rates to one advertiser.

    Returns:
        The report; advertisers are sorted jumped first, then by recent fix rate.
    """
    if since > until:
        raise InputError(f"the report starts ({since}) after it ends ({until})", field="since")
    recent_start = until - dt.timedelta(days=thresholds.recent_days - 1)
    baseline_start = recent_start - dt.timedelta(days=thresholds.baseline_days)
    first = min(since, baseline_start)
    days = [since + dt.timedelta(days=i) for i in range((until - since).days + 1)]
    cells: dict[tuple[str, dt.date], VersionDay] = {}

    def cell(version: str, day: dt.date) -> VersionDay:
        key = (version, day)
        if key not in cells:
            cells[key] = VersionDay(version, day)
        return cells[key]

    for day, version, image_type, n in monitoring.answer_mix(
        session, since, until, "image_type", advertiser
    ):
        vd = cell(_version(version), day)
        vd.types[image_type or NO_COLOR] = vd.types.get(image_type or NO_COLOR, 0) + n
        vd.rate.classified += n
    for day, version, color, n in monitoring.answer_mix(session, since, until, "color", advertiser):
        vd = cell(_version(version), day)
        vd.colors[color or NO_COLOR] = vd.colors.get(color or NO_COLOR, 0) + n

    # Per advertiser, day and version, from the start of the jump baseline.
    per: dict[str, dict[tuple[dt.date, str], Rate]] = defaultdict(lambda: defaultdict(Rate))
    for day, adv, version, n in monitoring.answers_per_advertiser(session, first, until):
        per[adv][(day, _version(version))].classified += n
    for day, adv, version in _fixes(session, first, until):
        per[adv][(day, version)].fixes += 1
        if since <= day and (advertiser is None or adv == advertiser):
            cell(version, day).rate.fixes += 1

    fleet_baseline = Rate()
    stats: list[AdvertiserStats] = []
    for adv, by_cell in per.items():
        s = AdvertiserStats(adv)
        for (day, version), r in by_cell.items():
            if day >= recent_start:
                s.recent.add(r)
            elif day >= baseline_start:
                s.baseline.add(r)
            if day >= since:
                s.total.add(r)
                s.daily.setdefault(day, Rate()).add(r)
                s.versions.setdefault(version, Rate()).add(r)
        fleet_baseline.add(s.baseline)
        stats.append(s)
    for s in stats:
        _judge(s, fleet_baseline, thresholds)

    shown = [s for s in stats if s.total.classified or s.total.fixes]
    if advertiser is not None:
        shown = [s for s in shown if s.advertiser_id == advertiser]
    shown.sort(key=lambda s: (not s.jumped, -(s.recent.rate or 0.0), s.advertiser_id))
    total = Rate()
    for vd in cells.values():
        total.add(vd.rate)
    version_days = sorted(cells.values(), key=lambda vd: (vd.version, vd.day))
    return MonitorReport(
        since=since,
        until=until,
        thresholds=thresholds,
        advertiser=advertiser,
        days=days,
        versions=sorted({vd.version for vd in version_days}),
        version_days=version_days,
        advertisers=shown,
        total=total,
        fleet_baseline=fleet_baseline,
    )


def _judge(s: AdvertiserStats, fleet: Rate, th: Thresholds) -> None:
    """Set ``jumped`` and a one-line ``verdict`` by the rule of the module docstring."""
    recent = s.recent.rate
    if s.recent.classified < th.min_volume or recent is None:
        s.verdict = f"too few recent answers ({s.recent.classified} < {th.min_volume})"
        return
    base = s.baseline
    if base.classified < th.min_volume:
        base, s.baseline_source = fleet, "all advertisers"
    baseline = base.rate
    if base.classified < th.min_volume or baseline is None:
        s.verdict = "not enough history to compare with"
        return
    s.jumped = recent >= th.min_ratio * baseline and recent - baseline >= th.min_increase
    relation = "jumped" if s.jumped else "steady"
    s.verdict = (
        f"{relation}: {recent * 100:.1f}% recently vs {baseline * 100:.1f}% "
        f"baseline ({s.baseline_source})"
    )


def report_since(
    session: Session,
    settings: Settings,
    since_text: str,
    now: dt.datetime,
    advertiser: str | None = None,
) -> MonitorReport:
    """:func:`build_report` from ``since_text`` (see :func:`parse_since`) up to today."""
    since = parse_since(since_text, now)
    return build_report(
        session,
        since=since,
        until=now.astimezone(dt.UTC).date(),
        thresholds=Thresholds.from_settings(settings),
        advertiser=advertiser,
    )
