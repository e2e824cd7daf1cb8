"""Bookkeeping writes of a classify call: which images each advertiser uses.

Re-classification after a promotion (:mod:`cartag.jobs.reclassify`) covers the images
of the advertisers that opted in; this module records them. Bookkeeping never fails an
answered request: a write that fails on a storage problem is warned about and counted
(:func:`bookkeeping_failed`), and the answers go out anyway.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from collections.abc import Iterable

from cartag.clock import Clock
from cartag.redaction import strip_password
from cartag.store import advertisers as advertiser_repo
from cartag.store.db import Database
from cartag.store.health import storage_problem
from cartag.telemetry import Telemetry

log = logging.getLogger(__name__)

# Bound on the in-process set of (advertiser, image) pairs recorded today.
_SEEN_LIMIT = 2_000_000


def bookkeeping_failed(telemetry: Telemetry, operation: str, exc: BaseException) -> None:
    """A bookkeeping write failed on a storage problem: warn and count; answers still go out."""
    log.warning(
        "could not record %s: %s (%r); the answers are served anyway",
        operation,
        storage_problem(exc),
        getattr(exc, "orig", None) or exc,
    )
    try:
        telemetry.storage_failed(operation)
    except Exception:  # noqa: BLE001 - metrics must never fail a classify
        log.exception("telemetry failed on a storage failure")


class AdvertiserImages:
    """Records which images each advertiser uses, at most once per image and day.

    Args:
        db: Where the records go.
        clock: Time source (the day, the records' time).
        telemetry: Told about storage failures.
    """

    def __init__(self, db: Database, clock: Clock, telemetry: Telemetry) -> None:
        self.db = db
        self.clock = clock
        self.telemetry = telemetry
        # (advertiser, image key) pairs recorded today, so known inventories cost no write.
        self._seen: set[tuple[str, str]] = set()
        self._seen_day: dt.date | None = None

    async def remember(self, advertiser_id: str, named: Iterable[tuple[str, str]]) -> None:
        """Record the advertiser's images (for re-classification after a promotion) and
        the URL it names each by (its listings show its own, not another's).

        Written at most once per advertiser, image and day per process: the cached path
        stays free of writes once an inventory has been seen today.

        Args:
            advertiser_id: Whose request.
            named: ``(image key, URL)`` pairs; the first URL of a key is kept.
        """
        today = self.clock.now().date()
        if today != self._seen_day or len(self._seen) > _SEEN_LIMIT:
            self._seen.clear()
            self._seen_day = today
        new: dict[str, str] = {}
        for key, url in named:
            if (advertiser_id, key) not in self._seen:
                new.setdefault(key, strip_password(url))
        if not new:
            return
        try:
            await asyncio.to_thread(self._record, advertiser_id, new)
        except Exception as exc:  # noqa: BLE001 - bookkeeping must never fail an answered request
            if storage_problem(exc) is not None:
                bookkeeping_failed(self.telemetry, "advertiser_images", exc)
            else:
                log.exception("could not record the images of advertiser %s", advertiser_id)
            return
        self._seen.update((advertiser_id, key) for key in new)

    def _record(self, advertiser_id: str, keys: dict[str, str]) -> None:
        with self.db.write() as session:
            advertiser_repo.record_advertiser_images(session, advertiser_id, keys, self.clock.now())
