"""What a running app holds: built once in the lifespan, shared by every request."""

from __future__ import annotations

from dataclasses import dataclass

from cartag.clock import Clock
from cartag.jobs.runner import JobRunner
from cartag.pipeline.classify import ClassifyService
from cartag.settings import Settings
from cartag.store.db import Database


@dataclass
class AppState:
    settings: Settings
    db: Database
    clock: Clock
    service: ClassifyService
    jobs: JobRunner
