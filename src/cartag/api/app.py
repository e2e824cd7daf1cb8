"""The FastAPI app factory: ``create_app(settings)``.

Boundaries (database, classifier, fetcher, clock, color provider) can be injected;
anything not given is built from the settings when the app starts.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from cartag import __version__
from cartag.api.errors import install_error_handlers
from cartag.api.routes import classify, conflicts, health, images, jobs
from cartag.api.state import AppState
from cartag.clock import Clock, SystemClock
from cartag.jobs.runner import JobRunner
from cartag.models.classifier import Classifier, load_classifier
from cartag.models.color_providers import (
    ColorProvider,
    build_color_provider,
    check_color_settings,
)
from cartag.pipeline.classify import ClassifyService
from cartag.pipeline.fetch import Fetcher
from cartag.settings import Settings
from cartag.store.db import Database, upgrade

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
) -> FastAPI:
    """Build the cartag HTTP API.

    Args:
        settings: Runtime settings.
        db: The store; default is built from ``settings.resolved_database_url``.
        classifier: The model; default is the bundled one (or ``settings.model_dir``).
        fetcher: Downloads; default is a real HTTP fetcher.
        clock: Time source; default is the system clock.
        color_provider: Names the colors of new images; default per
            ``settings.color_provider``. The app closes it on shutdown, injected or not:
            its connections belong to the app's event loop.
        run_jobs: Start the in-process job worker (tests may drive it themselves).

    Raises:
        ConfigError: The color-provider settings are invalid (checked here, before
            anything starts, so that ``cartag serve`` reports it and exits).
    """
    if color_provider is None:
        check_color_settings(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        own_db = db is None
        database = db or Database(settings.resolved_database_url)
        if settings.auto_migrate:
            upgrade(database)
        model = classifier or load_classifier(settings)
        http = fetcher or Fetcher(settings)
        clk = clock or SystemClock()
        colors = color_provider or build_color_provider(settings)
        service = ClassifyService(settings, database, http, model, clk, colors)
        runner = JobRunner(database, service, clk)
        app.state.cartag = AppState(settings, database, clk, service, runner)
        if run_jobs:
            runner.start()
        log.info(
            "cartag ready: model %s, color provider %s, database %s",
            model.version,
            colors.name,
            database.dialect,
        )
        try:
            yield
        finally:
            await runner.stop()
            service.close()
            await colors.aclose()
            if fetcher is None:
                await http.aclose()
            if own_db:
                database.dispose()

    app = FastAPI(
        title="cartag",
        version=__version__,
        description="Tags vehicle-listing photos: image type (Dealer/Stock/Placeholder) "
        "and vehicle color, with a shared cache and audited manual fixes.",
        lifespan=lifespan,
    )
    install_error_handlers(app)
    for module in (health, classify, images, conflicts, jobs):
        app.include_router(module.router)
    return app
