"""The FastAPI app factory: ``create_app(settings)``.

Boundaries (database, classifier, fetcher, clock, color provider) can be injected;
anything not given is built from the settings when the app starts (the serving
runtime of :mod:`cartag.runtime`, shared with the job workers).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import Depends, FastAPI
from fastapi.staticfiles import StaticFiles

from cartag import __version__
from cartag.api.deps import known_query
from cartag.api.errors import index_route_methods, install_error_handlers
from cartag.api.limits import BodyLimit, BodyLimitMiddleware
from cartag.api.middleware import NulGuardMiddleware, RequestContextMiddleware
from cartag.api.routes import (
    advertisers,
    classify,
    conflicts,
    fix_pages,
    health,
    images,
    jobs,
    review_pages,
)
from cartag.api.routes import metrics as metrics_routes
from cartag.api.routes import models as models_routes
from cartag.api.routes import monitor as monitor_routes
from cartag.api.routes import review as review_routes
from cartag.api.routes.docs import install_docs
from cartag.api.state import AppState
from cartag.clock import Clock
from cartag.deploy.drift import DriftGauges
from cartag.jobs.dispatch import ChunkSender, build_dispatcher, check_broker_settings
from cartag.memory import freeze_startup_objects
from cartag.models.classifier import Classifier
from cartag.models.color_providers import (
    ColorProvider,
    check_color_settings,
)
from cartag.net.fetch import Fetcher
from cartag.runtime import new_telemetry, open_database, start_runtime
from cartag.settings import Settings
from cartag.store.blobs import BlobStore, blob_store
from cartag.store.cache import LookupCache
from cartag.store.db import Database
from cartag.store.health import StorageHealth
from cartag.telemetry import Telemetry
from cartag.telemetry.prometheus import PrometheusTelemetry
from cartag.web import STATIC_DIR

log = logging.getLogger(__name__)


def create_app(
    settings: Settings,
    *,
    db: Database | None = None,
    classifier: Classifier | None = None,
    fetcher: Fetcher | None = None,
    clock: Clock | None = None,
    color_provider: ColorProvider | None = None,
    run_jobs: bool = True,
    chunk_sender: ChunkSender | None = None,
    telemetry: Telemetry | None = None,
    blobs: BlobStore | None = None,
    lookup_cache: LookupCache | None = None,
    freeze_gc: bool = False,
) -> FastAPI:
    """Build the cartag HTTP API.

    Args:
        settings: Runtime settings.
        db: The store; default is built from ``settings.resolved_database_url``.
        classifier: The model served at start; default: the registry's ``production``
            model (on a first start the bundled one, or ``settings.model_dir``, is
            registered as production). Either way the app then follows the alias.
        fetcher: Downloads; default is a real HTTP fetcher.
        clock: Time source; default is the system clock.
        color_provider: Names the colors of new images; default per
            ``settings.color_provider``. The app closes it on shutdown, injected or not:
            its connections belong to the app's event loop.
        run_jobs: Start the in-process job worker (tests may drive it themselves).
        telemetry: Receives metrics; default: Prometheus metrics in a registry of this
            app's own, exposed at ``/metrics``.
        chunk_sender: Where job chunks go for Celery workers; default: the broker of
            ``settings.broker_url`` if set, else jobs run in-process.
        blobs: Dataset images (the review page's thumbnails) and the fix page's
            thumbnails of classified images; default: files under ``<data_dir>/blobs``.
        freeze_gc: Once started, exempt what startup built from the garbage collector's
            full collections (:func:`~cartag.memory.freeze_startup_objects`; ``cartag
            serve`` does; tests, which build many apps in one process, don't).
        lookup_cache: Read-through cache of classify's URL lookups; default: Redis at
            ``settings.redis_cache_url`` if set, else none.

    Raises:
        ConfigError: The color-provider settings are invalid (checked here, before
            anything starts, so that ``cartag serve`` reports it and exits).
    """
    if color_provider is None:
        check_color_settings(settings)
    observer = telemetry or new_telemetry(settings)
    if db is None and chunk_sender is None:
        check_broker_settings(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        database = open_database(settings, db)
        runtime = await start_runtime(
            settings,
            database,
            classifier=classifier,
            clock=clock,
            fetcher=fetcher,
            color_provider=color_provider,
            lookup_cache=lookup_cache,
            telemetry=observer,
            owned=frozenset() if db is not None else frozenset({"db"}),
        )
        service, clk = runtime.service, runtime.clock
        runner = build_dispatcher(settings, database, service, clk, sender=chunk_sender)
        storage = StorageHealth(database, settings.data_dir, clk)
        app.state.cartag = AppState(
            settings, database, clk, service, runner, telemetry=observer, storage=storage
        )
        if isinstance(observer, PrometheusTelemetry):
            observer.add_queue_source(lambda: metrics_routes.job_queue_depth(database))
            observer.add_queue_age_source(lambda: metrics_routes.job_queue_age(database, clk))
            observer.set_drift_source(DriftGauges(database, settings, clk).read)
        watcher = runtime.watcher
        app.state.cartag.watcher = watcher
        polling = asyncio.create_task(watcher.run(), name="cartag-model-watcher")
        tasks = [polling]
        if run_jobs:
            runner.start()
            tasks.append(
                asyncio.create_task(
                    models_routes.resume_reclassifications(app.state.cartag),
                    name="cartag-reclassify-resume",
                )
            )
        if freeze_gc:
            freeze_startup_objects()
        log.info(
            "cartag ready: model %s, color provider %s, database %s",
            runtime.model.version,
            runtime.colors.name,
            database.dialect,
        )
        try:
            yield
        finally:
            for task in (*tasks, *app.state.cartag.background):
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            # A /healthz probe may still be writing on its own thread: done before the
            # database is disposed, or its connection outlives the pool's.
            await asyncio.to_thread(storage.close)
            await runner.stop()
            await runtime.aclose()

    app = FastAPI(
        title="cartag",
        version=__version__,
        description="Tags vehicle-listing photos: image type (Dealer/Stock/Placeholder) "
        "and vehicle color, with a shared cache and audited manual fixes.",
        lifespan=lifespan,
        # /docs is served from the package by install_docs (FastAPI loads it from a CDN).
        docs_url=None,
        redoc_url=None,
    )
    install_error_handlers(app)
    # Inside the request context (so a 413 is logged and counted), before any parsing.
    app.add_middleware(
        BodyLimitMiddleware,
        default=BodyLimit(
            settings.max_body_bytes,
            "CARTAG_MAX_BODY_BYTES",
            # Only classify and jobs take lists; any other body this large is a mistake.
            "this route takes a few fields: check what the client sends (GET /docs)",
        ),
        paths={
            "/v1/classify": BodyLimit(
                settings.max_body_bytes,
                "CARTAG_MAX_BODY_BYTES",
                "send fewer images per request, or large inventories as a job (POST /v1/jobs)",
            ),
            "/v1/jobs": BodyLimit(
                settings.max_job_body_bytes,
                "CARTAG_MAX_JOB_BODY_BYTES",
                "split the inventory into several jobs",
            ),
        },
    )
    app.add_middleware(NulGuardMiddleware)  # inside the request context: logged, counted
    app.add_middleware(RequestContextMiddleware, telemetry=observer)
    routers = [
        module.router
        for module in (health, classify, images, conflicts, jobs, metrics_routes, monitor_routes)
    ]
    routers += [
        models_routes.router,
        advertisers.router,
        review_routes.router,
        review_pages.pages,
        fix_pages.pages,
    ]
    for router in routers:
        # The JSON API refuses query parameters it does not take; pages keep their links.
        json_api = router.prefix.startswith("/v1")
        app.include_router(router, dependencies=[Depends(known_query)] if json_api else None)
    index_route_methods(app, routers)
    app.state.blobs = blobs or blob_store(settings)
    # The pages' scripts and styles (web/static), shipped as package data.
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    install_docs(app)
    return app
