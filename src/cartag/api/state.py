"""What a running app holds: built once in the lifespan, shared by every request."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

from cartag.clock import Clock
from cartag.deploy.hotswap import ModelWatcher
from cartag.jobs.base import JobDispatcher
from cartag.pipeline.classify import ClassifyService
from cartag.settings import Settings
from cartag.store.db import Database
from cartag.store.health import StorageHealth
from cartag.telemetry import Telemetry


@dataclass
class AppState:
    settings: Settings
    db: Database
    clock: Clock
    service: ClassifyService
    jobs: JobDispatcher
    # Metrics (cartag.telemetry.prometheus.PrometheusTelemetry in a served app).
    telemetry: Telemetry = field(default_factory=Telemetry)
    # Follows the registry's production alias and hot-swaps the model (None: not started).
    watcher: ModelWatcher | None = None
    # Background work started by requests (re-classification after a promotion); the
    # lifespan cancels what is still running at shutdown.
    background: set[asyncio.Task[Any]] = field(default_factory=set)
    # Write probes and storage failures seen by requests, for /healthz and /readyz.
    storage: StorageHealth | None = None
