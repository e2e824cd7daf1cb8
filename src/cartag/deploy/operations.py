"""The operational figures of /monitor that come from the store: per model version, the
cache hit rate per day, the job queue.

They cover every process (the store is shared) over the report's window, next to the
serving process's own figures (:mod:`cartag.telemetry.snapshot`: latency, errors, skip
reasons). A cached answer is one served from the store without running the model; the
cache hit rate of a day is cached ÷ answered images (``classify_daily``).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

from sqlalchemy.orm import Session

from cartag.deploy.monitor import UNKNOWN_VERSION, MonitorReport
from cartag.store import jobs as job_repo
from cartag.store import monitoring


@dataclass
class VersionOps:
    """One model version over the window: answers, how many came from the cache, fixes."""

    version: str
    answers: int = 0
    cached: int = 0
    fixes: int = 0
    first_day: dt.date | None = None
    last_day: dt.date | None = None

    @property
    def cache_rate(self) -> float | None:
        return self.cached / self.answers if self.answers else None

    @property
    def fix_rate(self) -> float | None:
        return self.fixes / self.answers if self.answers else None


@dataclass
class JobQueue:
    """The job queue now, and the jobs submitted in the window.

    Attributes:
        queued: Jobs waiting to start.
        running: Jobs being classified.
        pending_images: Images of queued or running jobs not classified yet.
        oldest_wait_s: Seconds the oldest queued job has waited (None: none waits).
        done: Jobs submitted in the window that finished.
        failed: Jobs submitted in the window that failed.
    """

    queued: int = 0
    running: int = 0
    pending_images: int = 0
    oldest_wait_s: float | None = None
    done: int = 0
    failed: int = 0


@dataclass
class OpsReport:
    """The store's operational figures for the monitor's window."""

    versions: list[VersionOps] = field(default_factory=list)
    cache_daily: dict[dt.date, tuple[int, int]] = field(default_factory=dict)
    jobs: JobQueue = field(default_factory=JobQueue)

    def cache_rate(self, day: dt.date) -> float | None:
        """Cached ÷ answered images of ``day`` (None: no answers that day)."""
        cached, answered = self.cache_daily.get(day, (0, 0))
        return cached / answered if answered else None


def _job_queue(session: Session, since: dt.datetime, now: dt.datetime) -> JobQueue:
    counts = job_repo.status_counts(session, since=since)
    queued, pending = job_repo.queue_depth(session)
    oldest = job_repo.oldest_queued(session)
    return JobQueue(
        queued=queued,
        running=counts.get(job_repo.RUNNING, 0),
        pending_images=pending,
        oldest_wait_s=max(0.0, (now - oldest).total_seconds()) if oldest is not None else None,
        done=counts.get(job_repo.DONE, 0),
        failed=counts.get(job_repo.FAILED, 0),
    )


def build_ops(session: Session, report: MonitorReport, now: dt.datetime) -> OpsReport:
    """The figures of ``report``'s window (and advertiser, if it names one) from the store.

    Args:
        session: A read session.
        report: The monitor report (its window, advertiser and per-version fixes).
        now: The current time (the queue's waiting time).
    """
    ops = OpsReport()
    by_version: dict[str, VersionOps] = {}
    for day, version, status, n in monitoring.answers_by_status(
        session, report.since, report.until, report.advertiser
    ):
        name = version or UNKNOWN_VERSION
        row = by_version.setdefault(name, VersionOps(name))
        row.answers += n
        cached, answered = ops.cache_daily.get(day, (0, 0))
        if status == "cached":
            row.cached += n
            cached += n
        ops.cache_daily[day] = (cached, answered + n)
        row.first_day = min(day, row.first_day or day)
        row.last_day = max(day, row.last_day or day)
    for cell in report.version_days:
        if cell.rate.fixes:
            by_version.setdefault(cell.version, VersionOps(cell.version)).fixes += cell.rate.fixes
    ops.versions = sorted(by_version.values(), key=lambda v: (v.last_day or dt.date.min, v.version))
    ops.versions.reverse()  # the newest first
    start = dt.datetime.combine(report.since, dt.time(), dt.UTC)
    ops.jobs = _job_queue(session, start, now)
    return ops
