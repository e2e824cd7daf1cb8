"""The callback sweep of a Celery worker process, in a thread of its own.

A ``cartag worker`` runs one chunk at a time on its event loop; the callbacks no
process is sending (the worker that finished the job died before sending it, or while
retrying it) are looked for beside them, when the worker starts and every
:data:`~cartag.jobs.delivery.CALLBACK_SWEEP_S`, on another thread with its own loop and
connections, so a slow receiver never holds up a chunk. The callback of a job a chunk
finishes is handed to this thread too (:meth:`CallbackSweeper.send_soon`). Each callback
is claimed in the database before it is sent (:func:`cartag.jobs.delivery.send_callback`):
every worker and serving process may sweep at once, and one sends each.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import threading

from cartag.clock import Clock
from cartag.jobs import delivery
from cartag.net.fetch import Fetcher
from cartag.settings import Settings
from cartag.store.db import Database

log = logging.getLogger(__name__)


class CallbackSweeper:
    """Sends the callbacks no process is sending, at :meth:`start` and periodically.

    Args:
        settings: Runtime settings (the fetcher's, the callback secret and timeout).
        db: The shared store.
        clock: Time source (claims' leases).
        interval_s: Seconds between sweeps; each looks at the jobs submitted in the last
            :data:`~cartag.jobs.delivery.CALLBACK_SWEEP_WINDOW_S`, the first at all.
        policy: How callbacks are sent (default: the settings' secret and timeout, the
            default attempts and backoff).
    """

    def __init__(
        self,
        settings: Settings,
        db: Database,
        clock: Clock,
        *,
        interval_s: float = delivery.CALLBACK_SWEEP_S,
        policy: delivery.CallbackPolicy | None = None,
    ) -> None:
        self.settings = settings
        self.db = db
        self.clock = clock
        self.interval_s = interval_s
        self.policy = policy or delivery.CallbackPolicy.from_settings(settings)
        self.sweeps = 0
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._main: asyncio.Task[None] | None = None
        self._fetcher: Fetcher | None = None

    async def sweep(self, fetcher: Fetcher, *, since: dt.datetime | None) -> int:
        """One sweep; returns how many callbacks it sent (delivered or not)."""
        sent = await delivery.send_pending_callbacks(
            self.db, fetcher, clock=self.clock, policy=self.policy, since=since
        )
        self.sweeps += 1
        return sent

    def start(self) -> None:
        """Start sweeping on a daemon thread (the first sweep at once)."""
        started = threading.Event()
        self._thread = threading.Thread(
            target=self._run, args=(started,), name="cartag-callbacks", daemon=True
        )
        self._thread.start()
        started.wait()

    def stop(self, timeout_s: float = 10.0) -> None:
        """Stop sweeping; a callback being sent is let go, for another process to send."""
        loop, main = self._loop, self._main
        if loop is not None and main is not None:
            # The loop closes once its sweep ends (a stop racing with it: nothing to do).
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(main.cancel)
        if self._thread is not None:
            self._thread.join(timeout_s)
            self._thread = None

    def _run(self, started: threading.Event) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        try:
            self._main = loop.create_task(self._sweep_forever())
            started.set()
            loop.run_until_complete(self._main)
        except asyncio.CancelledError:
            pass
        finally:
            loop.close()

    def send_soon(self, job_id: str) -> bool:
        """Send a finished job's callback on this thread, beside the caller's work.

        Returns:
            False when the thread is not (or no longer) running: send it yourself.
        """
        loop, fetcher = self._loop, self._fetcher
        if loop is None or fetcher is None or loop.is_closed():
            return False
        try:
            send = delivery.send_callback_or_leave(
                self.db, fetcher, job_id, clock=self.clock, policy=self.policy
            )
            asyncio.run_coroutine_threadsafe(send, loop)
        except RuntimeError:  # the loop closed meanwhile
            return False
        return True

    async def _sweep_forever(self) -> None:
        async with Fetcher(self.settings) as fetcher:
            self._fetcher = fetcher
            since: dt.datetime | None = None
            while True:
                try:
                    await self.sweep(fetcher, since=since)
                except Exception:  # noqa: BLE001 - the next sweep tries again
                    log.exception("sending the callbacks no process was sending failed")
                await asyncio.sleep(self.interval_s)
                since = delivery.sweep_since(self.clock)
