"""What one worker process holds: the serving runtime and an event loop, built once.

``cartag worker`` builds a :class:`WorkerContext` before it starts consuming tasks,
so the model is loaded once per process and every chunk task reuses it. The runtime
(database, model, fetcher, color provider, cache, telemetry, classify service) is
the API's (:mod:`cartag.runtime`).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Coroutine
from typing import Any, TypeVar

from cartag.clock import Clock
from cartag.jobs.sweeper import CallbackSweeper
from cartag.models.classifier import Classifier
from cartag.models.color_providers import check_color_settings
from cartag.net.fetch import Fetcher
from cartag.runtime import build_runtime, new_telemetry, open_database
from cartag.settings import Settings
from cartag.store.db import Database

_T = TypeVar("_T")

log = logging.getLogger(__name__)


class WorkerContext:
    """The classify service of a worker process and the loop its coroutines run on.

    Args:
        settings: Runtime settings.
        db: The shared store.
        classifier: The model; default: the registry's production model (or the
            configured one), loaded once; :meth:`follow_production` keeps it current.
        clock: Time source; default: the system clock.
        fetcher: Downloads; default: a real fetcher.
    """

    def __init__(
        self,
        settings: Settings,
        db: Database,
        *,
        classifier: Classifier | None = None,
        clock: Clock | None = None,
        fetcher: Fetcher | None = None,
    ) -> None:
        check_color_settings(settings)
        self.settings = settings
        self.db = db
        # The fetcher's connections and the color provider belong to this loop.
        self.loop = asyncio.new_event_loop()
        asyncio.set_event_loop(self.loop)
        # A worker process owns what it is given: close() closes it all. Its metrics
        # live in a registry of its own (served by serve_metrics() when
        # CARTAG_WORKER_METRICS_PORT is set).
        self.telemetry = new_telemetry(settings)
        self.runtime = build_runtime(
            settings,
            db,
            classifier=classifier,
            clock=clock,
            fetcher=fetcher,
            telemetry=self.telemetry,
            owned=frozenset({"db", "fetcher", "lookup_cache"}),
        )
        self.clock = self.runtime.clock
        # Sends finished jobs' callbacks on its own thread (cartag worker sets it): a
        # slow receiver then never holds up the next chunk. None: sent on this loop.
        self.callbacks: CallbackSweeper | None = None
        self.fetcher = self.runtime.fetcher
        self.service = self.runtime.service
        # Workers follow the production alias like servers do, between chunks.
        self.watcher = self.runtime.watcher
        self._checked = time.monotonic()

    def serve_metrics(self, port: int, host: str = "0.0.0.0") -> int:
        """Serve this worker's metrics at ``http://host:port/metrics`` (a daemon thread).

        Returns:
            The port (useful with ``port=0``: a free one).
        """
        from prometheus_client import start_http_server

        server, _thread = start_http_server(port, addr=host, registry=self.telemetry.registry)
        self._metrics_server = server
        return int(server.server_port)

    def follow_production(self) -> None:
        """Hot-swap to the production model if it changed (checked at most every
        ``model_poll_s`` seconds; a failed check keeps the current model)."""
        if time.monotonic() - self._checked < self.settings.model_poll_s:
            return
        self._checked = time.monotonic()
        try:
            self.run(self.watcher.check())
        except Exception:  # noqa: BLE001 - a registry hiccup must not fail the chunk
            log.exception("checking the production model failed; keeping %s", self.watcher.serving)

    @classmethod
    def from_settings(cls, settings: Settings) -> WorkerContext:
        """Open (and migrate, if allowed) the database, load the model."""
        return cls(settings, open_database(settings))

    def run(self, coro: Coroutine[Any, Any, _T]) -> _T:
        """Run a coroutine to completion on this worker's loop."""
        return self.loop.run_until_complete(coro)

    def close(self) -> None:
        server = getattr(self, "_metrics_server", None)
        if server is not None:
            server.shutdown()
            server.server_close()
        self.run(self.runtime.aclose())
        self.loop.close()
