"""Heartbeats of long work that another process takes over once it falls silent.

A job an in-process runner runs (``jobs.heartbeat_at``) and a re-classification after a
promotion (``reclassify_requests.progress_at``) each hold a lease: while the work goes on,
:func:`beating` writes a sign of life every quarter of ``CARTAG_JOB_LEASE_S``, and any
other process takes over work silent for a whole lease (its process was stopped or
killed). What is written, and who takes over, belongs to each kind of work.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable

log = logging.getLogger(__name__)


@contextlib.asynccontextmanager
async def beating(beat: Callable[[], bool], interval_s: float, what: str) -> AsyncIterator[None]:
    """Call ``beat`` in a worker thread every ``interval_s`` seconds while the block runs.

    Args:
        beat: Writes the sign of life; False when there is nothing left to beat on (the
            work finished, or was taken over after a silence): the beats stop.
        interval_s: Seconds between two beats (the first comes after one interval).
        what: The work, for the log (``job …``).
    """
    task = asyncio.create_task(_beat_every(beat, interval_s, what), name=f"cartag-beat {what}")
    try:
        yield
    finally:
        task.cancel()
        # asyncio.wait, not `suppress(CancelledError): await task`: that would also
        # swallow the block's own cancellation (the server stopping) arriving meanwhile.
        await asyncio.wait({task})


async def _beat_every(beat: Callable[[], bool], interval_s: float, what: str) -> None:
    while True:
        await asyncio.sleep(interval_s)
        try:
            alive = await asyncio.to_thread(beat)
        except Exception as exc:  # noqa: BLE001 - the work goes on; the next beat may do
            log.warning("%s: heartbeat not written: %r", what, getattr(exc, "orig", exc))
            continue
        if not alive:
            return
