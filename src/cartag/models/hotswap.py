"""Serving follows the registry: the start-up model and the hot-swap to a promoted one.

:func:`startup_model` picks what a server starts with (the ``production`` model,
falling back to the bundled one); :class:`ModelWatcher` polls the alias and swaps a
newly promoted model into the running service without dropping a request. The
registry operations themselves live in :mod:`cartag.models.registry`.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from cartag.clock import Clock
from cartag.errors import ModelError
from cartag.models.classifier import Classifier, load_classifier
from cartag.models.registry import ensure_initial, load_registered
from cartag.settings import Settings
from cartag.store import registry as repo
from cartag.store.db import Database
from cartag.store.registry import PRODUCTION, REFUSED, get_alias

log = logging.getLogger(__name__)


def startup_model(
    db: Database, settings: Settings, *, clock: Clock, classifier: Classifier | None = None
) -> Classifier:
    """The model a server starts with (blocking: run it in a thread from async code).

    On a first start the bundled model (or ``CARTAG_MODEL_DIR``) is registered as
    production. Then: ``classifier`` if given (tests inject one), else the production
    model; if that cannot load, the bundled / ``CARTAG_MODEL_DIR`` model, with an error
    logged, so a broken registry entry never keeps a server down.

    Raises:
        ModelError: Neither the production nor the configured model can be loaded.
    """
    if classifier is None:
        with db.read() as session:
            empty = repo.count_versions(session) == 0
        if empty:
            # Load the network once: registration and serving share its backbone.
            classifier = load_classifier(settings)
            ensure_initial(db, settings, clock=clock, reuse=classifier)
            return load_production(db, settings, reuse=classifier) or classifier
        model = load_production(db, settings)
        return model if model is not None else load_classifier(settings)
    ensure_initial(db, settings, clock=clock, reuse=classifier)
    return classifier


def load_production(
    db: Database, settings: Settings, *, reuse: Classifier | None = None
) -> Classifier | None:
    """The loaded, smoke-checked production model; None (logged) when unset or broken."""
    with db.read() as session:
        row = get_alias(session, PRODUCTION)
    if row is None:
        return None
    try:
        return load_registered(settings, row, reuse=reuse)
    except ModelError as exc:
        log.error(
            "production model %s cannot serve (%s); using the configured model instead",
            row.version,
            exc.message,
        )
        return None


class ModelWatcher:
    """Keeps a running service on the model the ``production`` alias names.

    :meth:`check` reads the alias (one primary-key read); when it points at a version
    this server has not acted on yet, the model is loaded and smoke-checked in a
    worker thread, then swapped into the service: requests never wait on the load.
    A version that fails is marked refused, logged, and not tried again by this
    process; the old model keeps serving.

    Args:
        db: The store.
        settings: Loading settings and ``model_poll_s``.
        service: Anything with ``classifier`` and ``swap_classifier(new)``
            (:class:`cartag.pipeline.classify.ClassifyService`).
        alias: The alias to follow.
    """

    def __init__(
        self, db: Database, settings: Settings, service: Any, *, alias: str = PRODUCTION
    ) -> None:
        self.db = db
        self.settings = settings
        self.service = service
        self.alias = alias
        self.seen: str | None = None
        self.refused: set[str] = set()
        self.swaps = 0
        self._lock = asyncio.Lock()

    def prime(self) -> None:
        """Take the alias as it is now as already acted on (the model served at start)."""
        with self.db.read() as session:
            self.seen = repo.alias_version(session, self.alias)

    @property
    def serving(self) -> str:
        return str(self.service.classifier.version)

    async def check(self) -> str | None:
        """Swap to the alias's version if it changed.

        Returns:
            The version swapped to, or None when nothing changed or the load failed.
        """
        async with self._lock:
            # Off the event loop: a database round trip would stall every request.
            version = await asyncio.to_thread(self._alias_version)
            if version is None or version == self.seen or version in self.refused:
                return None
            if version == self.serving:
                self.seen = version
                return None
            with self.db.read() as session:
                row = repo.find_version(session, version)
            try:
                if row is None:
                    raise ModelError(f"{self.alias} names {version}, which is not registered")
                model = await asyncio.to_thread(
                    load_registered, self.settings, row, reuse=self.service.classifier
                )
            except ModelError as exc:
                self.refused.add(version)
                log.error(
                    "model %s refused, still serving %s: %s", version, self.serving, exc.message
                )
                await asyncio.to_thread(self._mark_refused, version, exc.message)
                return None
            old = self.service.swap_classifier(model)
            self.seen = version
            self.swaps += 1
            log.info("hot-swapped model %s -> %s", old.version, version)
            return version

    def _alias_version(self) -> str | None:
        with self.db.read() as session:
            return repo.alias_version(session, self.alias)

    def _mark_refused(self, version: str, reason: str) -> None:
        try:
            with self.db.write() as session:
                if repo.find_version(session, version) is not None:
                    repo.set_status(session, version, REFUSED, reason)
        except Exception:  # noqa: BLE001 - the refusal is logged either way
            log.exception("could not mark model %s refused", version)

    async def run(self) -> None:
        """Poll every ``settings.model_poll_s`` seconds until cancelled."""
        while True:
            try:
                await self.check()
            except Exception:  # noqa: BLE001 - the poller must outlive a database hiccup
                log.exception("checking the %s model failed", self.alias)
            await asyncio.sleep(self.settings.model_poll_s)
