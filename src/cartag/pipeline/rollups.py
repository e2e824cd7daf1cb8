"""Where a classify call's answers are counted: telemetry and the daily monitoring rollup.

The rollup (``classify_daily``, :mod:`cartag.ops.daily`) is what the monitor page
reads; it is kept in memory and written every ``monitor_flush_s`` seconds. Neither
counting may fail an answered request: failures are logged and the answers go out.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from collections.abc import Sequence

from cartag.clock import Clock
from cartag.ops.daily import RollupBuffer
from cartag.pipeline.results import ClassifyResult
from cartag.store.db import Database
from cartag.telemetry import Telemetry

log = logging.getLogger(__name__)


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
        self._rollup = RollupBuffer(db, interval_s=interval_s)

    async def record(self, advertiser_id: str, results: Sequence[ClassifyResult]) -> None:
        """Report the answers to telemetry and add them to the daily monitoring rollup."""
        try:
            self.telemetry.images_answered(results)
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
