"""The serving runtime: everything a process needs to answer classify calls, built once.

The API (its lifespan, :mod:`cartag.api.app`) and each job worker process
(:mod:`cartag.jobs.worker`) build the same :class:`Runtime`: the database (migrated if
allowed), the registry's production model, the fetcher, the color provider, the
lookup cache, the telemetry, the :class:`~cartag.pipeline.classify.ClassifyService`
and the :class:`~cartag.deploy.hotswap.ModelWatcher` that keeps it on the production
model. This module belongs to the interfaces/jobs layer: nothing below ``jobs``
imports it.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from cartag.clock import Clock, SystemClock
from cartag.deploy.hotswap import ModelWatcher, startup_model
from cartag.models.classifier import Classifier
from cartag.models.color_providers import ColorProvider, build_color_provider
from cartag.net.fetch import Fetcher
from cartag.pipeline.classify import ClassifyService
from cartag.settings import Settings
from cartag.store.cache import LookupCache, build_lookup_cache
from cartag.store.db import Database, upgrade
from cartag.telemetry import Telemetry
from cartag.telemetry.prometheus import PrometheusTelemetry


def open_database(settings: Settings, db: Database | None = None) -> Database:
    """``db``, else the database of ``settings.resolved_database_url``; migrated if allowed."""
    database = db or Database(settings.resolved_database_url)
    if settings.auto_migrate:
        upgrade(database)
    return database


def new_telemetry(settings: Settings) -> PrometheusTelemetry:
    """Prometheus metrics in a registry of their own (one per app or worker process)."""
    return PrometheusTelemetry(
        top_hosts=settings.metrics_top_hosts, top_advertisers=settings.metrics_top_advertisers
    )


@dataclass
class Runtime:
    """The parts of a serving process; :meth:`aclose` closes those it owns.

    Attributes:
        model: The model served at start (the service follows the production alias).
        owned: Names of the parts this runtime built (or was told to own) and closes:
            ``db``, ``fetcher``, ``lookup_cache``. The color provider is always closed:
            its connections belong to the event loop that used it.
    """

    settings: Settings
    db: Database
    clock: Clock
    model: Classifier
    fetcher: Fetcher
    colors: ColorProvider
    lookup_cache: LookupCache
    telemetry: Telemetry
    service: ClassifyService
    watcher: ModelWatcher
    owned: frozenset[str]

    async def aclose(self) -> None:
        """Stop the service and close the parts it owns (run on the loop that used them)."""
        self.service.close()
        if "lookup_cache" in self.owned:
            self.lookup_cache.close()
        await self.colors.aclose()
        if "fetcher" in self.owned:
            await self.fetcher.aclose()
        if "db" in self.owned:
            self.db.dispose()


def assemble(
    settings: Settings,
    db: Database,
    model: Classifier,
    *,
    clock: Clock,
    fetcher: Fetcher | None = None,
    color_provider: ColorProvider | None = None,
    lookup_cache: LookupCache | None = None,
    telemetry: Telemetry | None = None,
    owned: frozenset[str] = frozenset(),
) -> Runtime:
    """Build the runtime around a loaded model (call it on the loop that will serve).

    Args:
        settings: Runtime settings.
        db: The store.
        model: The model to serve at start.
        clock: Time source.
        fetcher: Downloads; default: a real fetcher (owned).
        color_provider: Names colors; default per ``settings.color_provider``.
        lookup_cache: URL lookups' cache; default per ``settings.redis_cache_url`` (owned).
        telemetry: Receives metrics; default: :func:`new_telemetry`.
        owned: Given parts the runtime closes too (``db``, ``fetcher``, ``lookup_cache``).
    """
    made = set(owned)
    if fetcher is None:
        fetcher = Fetcher(settings)
        made.add("fetcher")
    if lookup_cache is None:
        lookup_cache = build_lookup_cache(settings)
        made.add("lookup_cache")
    colors = color_provider or build_color_provider(settings)
    observer = telemetry or new_telemetry(settings)
    service = ClassifyService(
        settings,
        db,
        fetcher,
        model,
        clock,
        colors,
        telemetry=observer,
        lookup_cache=lookup_cache,
    )
    observer.model_loaded(model.version, model.backbone_id, model.int8_problem)
    # The process follows the production alias (servers by polling, workers between chunks).
    watcher = ModelWatcher(db, settings, service)
    watcher.prime()
    return Runtime(
        settings=settings,
        db=db,
        clock=clock,
        model=model,
        fetcher=fetcher,
        colors=colors,
        lookup_cache=lookup_cache,
        telemetry=observer,
        service=service,
        watcher=watcher,
        owned=frozenset(made),
    )


def build_runtime(
    settings: Settings,
    db: Database,
    *,
    classifier: Classifier | None = None,
    clock: Clock | None = None,
    fetcher: Fetcher | None = None,
    color_provider: ColorProvider | None = None,
    lookup_cache: LookupCache | None = None,
    telemetry: Telemetry | None = None,
    owned: frozenset[str] = frozenset(),
) -> Runtime:
    """Load the production model (blocking) and :func:`assemble` the runtime around it.

    Args:
        classifier: The model to start with; default: the registry's production model
            (on a first start the bundled one, or ``settings.model_dir``, is registered).
        clock: Time source; default: the system clock.
        settings, db, fetcher, color_provider, lookup_cache, telemetry, owned: See
            :func:`assemble`.
    """
    clk = clock or SystemClock()
    model = startup_model(db, settings, clock=clk, classifier=classifier)
    return assemble(
        settings,
        db,
        model,
        clock=clk,
        fetcher=fetcher,
        color_provider=color_provider,
        lookup_cache=lookup_cache,
        telemetry=telemetry,
        owned=owned,
    )


async def start_runtime(
    settings: Settings,
    db: Database,
    *,
    classifier: Classifier | None = None,
    clock: Clock | None = None,
    fetcher: Fetcher | None = None,
    color_provider: ColorProvider | None = None,
    lookup_cache: LookupCache | None = None,
    telemetry: Telemetry | None = None,
    owned: frozenset[str] = frozenset(),
) -> Runtime:
    """:func:`build_runtime` from async code: the model loads in a worker thread."""
    clk = clock or SystemClock()
    model = await asyncio.to_thread(startup_model, db, settings, clock=clk, classifier=classifier)
    return assemble(
        settings,
        db,
        model,
        clock=clk,
        fetcher=fetcher,
        color_provider=color_provider,
        lookup_cache=lookup_cache,
        telemetry=telemetry,
        owned=owned,
    )
