"""Where a classify call's answers are counted: telemetry and the daily monitoring rollup.

The rollup (``classify_daily``: who got which answers on which day, from which model) is
what the monitor page reads (:mod:`cartag.deploy.monitor`). It is counted in memory per
classify call (an API request or a job chunk) and written every ``monitor_flush_s``
seconds as one bulk upsert that adds to the counts (:class:`RollupBuffer`, through
:func:`cartag.store.monitoring.record_counts`). Neither counting may fail an answered
request: failures are logged and the answers go out.

Beside each count go the drift sums (:class:`~cartag.store.monitoring.DriftSums`):
confidence, and the novelty of answers against their model's training reference with
how many were far (beyond the far threshold of the model version that answered; a
version this process never served has no known threshold, so its novelty is not
counted). :mod:`cartag.deploy.drift` reads them.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import threading
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from typing import Protocol

from cartag.clock import Clock
from cartag.pipeline.results import ClassifyResult
from cartag.store.db import Database
from cartag.store.monitoring import DriftSums, RollupKey, record_counts
from cartag.telemetry import Telemetry

log = logging.getLogger(__name__)


class Answer(Protocol):
    """The fields of a classify result the rollup reads."""

    @property
    def status(self) -> str: ...

    @property
    def model_version(self) -> str | None: ...

    @property
    def image_type(self) -> str | None: ...

    @property
    def color(self) -> str | None: ...

    @property
    def source(self) -> str | None: ...

    @property
    def confidence(self) -> float | None: ...

    @property
    def novelty(self) -> float | None: ...


# The far threshold of a model version (None: unknown, or the model has no reference).
FarThresholds = Callable[[str], float | None]


def _no_thresholds(version: str) -> float | None:
    return None


def rollup(answers: Iterable[Answer]) -> Counter[RollupKey]:
    """Count answered (not skipped) images by (model_version, status, type, color, source).

    Missing values become ``""`` (they are part of the table's primary key).
    """
    counts: Counter[RollupKey] = Counter()
    for a in answers:
        if a.status == "skipped":
            continue
        counts[_key(a)] += 1
    return counts


def drift_sums(
    answers: Iterable[Answer], far_threshold: FarThresholds = _no_thresholds
) -> dict[RollupKey, DriftSums]:
    """The drift sums of answered images, keyed like :func:`rollup`.

    Args:
        answers: Classify results.
        far_threshold: The far threshold of a model version; the novelty of a version
            without one is not counted (its far share would be unknown).
    """
    sums: dict[RollupKey, DriftSums] = {}
    for a in answers:
        if a.status == "skipped":
            continue
        tally = sums.setdefault(_key(a), DriftSums())
        if a.confidence is not None:
            tally.confidence_n += 1
            tally.confidence_sum += a.confidence
        threshold = None if a.novelty is None else far_threshold(a.model_version or "")
        if a.novelty is not None and threshold is not None:
            tally.novelty_n += 1
            tally.novelty_sum += a.novelty
            tally.far_n += a.novelty > threshold
    return sums


def _key(a: Answer) -> RollupKey:
    return (a.model_version or "", a.status, a.image_type or "", a.color or "", a.source or "")


class RollupBuffer:
    """Adds answers to the rollup in memory and writes them every ``interval_s``.

    A write per classify call cost ~7 ms at the median of a cached 100-image request on
    PostgreSQL (a third of its latency); the counts lose nothing by waiting a few
    seconds. A crash loses at most one interval of monitoring counts, never answers.
    With ``interval_s == 0`` every :meth:`add` writes at once.

    Args:
        db: Where the rollup lives.
        interval_s: Seconds between writes.
        far_threshold: The far threshold of a model version.
    """

    def __init__(
        self, db: Database, *, interval_s: float, far_threshold: FarThresholds = _no_thresholds
    ) -> None:
        self.db = db
        self.interval_s = interval_s
        self.far_threshold = far_threshold
        self._lock = threading.Lock()
        self._pending: dict[tuple[dt.date, str], _Pending] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        if interval_s > 0:
            self._thread = threading.Thread(target=self._run, name="cartag-rollup", daemon=True)
            self._thread.start()

    def add(self, day: dt.date, advertiser_id: str, answers: Iterable[Answer]) -> None:
        """Count one classify call's answers (skipped ones are not counted)."""
        answers = list(answers)
        counts = rollup(answers)
        if not counts:
            return
        sums = drift_sums(answers, self.far_threshold)
        with self._lock:
            self._pending.setdefault((day, advertiser_id), _Pending()).add(counts, sums)
        if self._thread is None:
            self.flush()

    def flush(self) -> int:
        """Write everything counted so far; returns how many answers were written.

        On a failed write the counts are kept for the next attempt.
        """
        with self._lock:
            pending, self._pending = self._pending, {}
        if not pending:
            return 0
        written = 0
        try:
            with self.db.write() as session:
                for (day, advertiser_id), part in sorted(pending.items(), key=lambda item: item[0]):
                    written += record_counts(session, day, advertiser_id, part.counts, part.sums)
        except BaseException:
            with self._lock:
                for key, part in pending.items():
                    self._pending.setdefault(key, _Pending()).add(part.counts, part.sums)
            raise
        return written

    def close(self) -> None:
        """Stop the writer thread and write what is left."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
        try:
            self.flush()
        except Exception:  # noqa: BLE001 - shutting down: report, don't mask the caller
            log.exception("could not write the last monitoring counts")

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                self.flush()
            except Exception:  # noqa: BLE001 - retried at the next interval
                log.exception("could not write the monitoring rollup; will retry")


class _Pending:
    """Counts and drift sums of one (day, advertiser) waiting to be written."""

    def __init__(self) -> None:
        self.counts: Counter[RollupKey] = Counter()
        self.sums: dict[RollupKey, DriftSums] = {}

    def add(self, counts: Counter[RollupKey], sums: dict[RollupKey, DriftSums]) -> None:
        self.counts.update(counts)
        for key, tally in sums.items():
            self.sums.setdefault(key, DriftSums()).add(tally)


class AnswerCounter:
    """Reports answers to telemetry and adds them to the daily rollup.

    Args:
        db: Where the rollup lives.
        clock: Time source (the rollup's UTC day).
        telemetry: Told about every answer (metrics).
        interval_s: Seconds between rollup writes; 0 = write on every call.
    """

    def __init__(
        self, db: Database, clock: Clock, telemetry: Telemetry, *, interval_s: float
    ) -> None:
        self.clock = clock
        self.telemetry = telemetry
        # Far thresholds of the model versions this process served (a folder's reference
        # never changes once registered, so a version's threshold is fixed).
        self._thresholds: dict[str, float | None] = {}
        self._rollup = RollupBuffer(db, interval_s=interval_s, far_threshold=self._threshold)

    def know_model(self, version: str, far_threshold: float | None) -> None:
        """Remember the far threshold of a model version that serves (or served)."""
        self._thresholds[version] = far_threshold

    def _threshold(self, version: str) -> float | None:
        return self._thresholds.get(version)

    async def record(self, advertiser_id: str, results: Sequence[ClassifyResult]) -> None:
        """Report the answers to telemetry and add them to the daily monitoring rollup."""
        try:
            self.telemetry.images_answered(results)
            answered = sum(1 for r in results if r.status != "skipped")
            self.telemetry.advertiser_answered(advertiser_id, answered)
        except Exception:  # noqa: BLE001 - metrics must never fail an answered request
            log.exception("telemetry failed on %d answers", len(results))
        day = self.clock.now().astimezone(dt.UTC).date()
        try:
            if self._rollup.interval_s > 0:
                self._rollup.add(day, advertiser_id, results)  # in memory: no write here
            else:
                await asyncio.to_thread(self._rollup.add, day, advertiser_id, results)
        except Exception:  # noqa: BLE001 - monitoring must never fail an answered request
            log.exception("could not add the answers of %s to the daily rollup", advertiser_id)

    def flush(self) -> int:
        """Write the monitoring counts kept in memory now (tests, shutdown)."""
        return self._rollup.flush()

    def close(self) -> None:
        """Stop the rollup's writer and write what is left."""
        self._rollup.close()
