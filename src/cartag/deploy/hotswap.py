"""Serving follows the registry: the start-up model and the hot-swap to a promoted one.

:func:`startup_model` picks what a server starts with: the ``production`` model; if that
cannot load, the last version that did load as production (recorded in the registry
under :data:`~cartag.store.model_versions.LAST_LOADED` by every server and worker that loads
one) or an earlier production version, and only then the bundled one. :class:`ModelWatcher`
polls the alias and swaps a newly promoted model into the running service without dropping
a request, and reports a server that serves another model than production (logs,
``cartag_model_fallback``, and ``/healthz`` through :attr:`ModelWatcher.fallback_reason`).
A version whose files are bad is marked refused for the whole fleet; one that failed for a
reason of this host (:func:`local_failure`: an I/O error, its folder missing here, memory
running out, an engine's out-of-memory error included) is tried again on this host, with a
growing delay, and stays promotable (``cartag_model_host_load_failures`` counts the tries).
Registration and the load check: :mod:`cartag.deploy.registry` and
:mod:`cartag.deploy.loadcheck`.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import os
import re
import socket
from dataclasses import dataclass
from typing import Any, Final

from cartag.clock import Clock, SystemClock
from cartag.deploy.loadcheck import load_registered, models_root
from cartag.deploy.registry import ensure_initial
from cartag.errors import ModelError
from cartag.models.classifier import Classifier, load_classifier
from cartag.settings import Settings
from cartag.store import model_versions as repo
from cartag.store.db import Database
from cartag.store.model_versions import (
    LAST_LOADED,
    PRODUCTION,
    REFUSED,
    REGISTERED,
    get_alias,
    history,
)
from cartag.store.tables import ModelVersionRow
from cartag.telemetry import Telemetry

log = logging.getLogger(__name__)

# Why a version could not serve in this process, per (models root, version): what
# /healthz gives as the reason of a fallback. Per process because the cause (a damaged
# disk, a missing file) may be this host's alone; keyed by the models root so that apps
# on different data dirs in one process (tests) do not see each other's.
_problems: dict[tuple[str, str], str] = {}


def _note_problem(settings: Settings, version: str, problem: str | None) -> None:
    key = (str(models_root(settings)), version)
    if problem is None:
        _problems.pop(key, None)
    else:
        _problems[key] = problem


def load_problem(settings: Settings, version: str) -> str | None:
    """Why ``version`` last failed to load in this process (None: it did not fail)."""
    return _problems.get((str(models_root(settings)), version))


# What a host raises, not the files: a failing disk or network mount (a model folder
# missing here: the load check raises from the OSError), a permission, memory running
# out. The same files may load on another host, or on this one a minute later.
_LOCAL_CAUSES: Final[tuple[type[BaseException], ...]] = (OSError, MemoryError)

# Memory running out in a native engine, which raises no MemoryError: ONNX Runtime's
# RuntimeException / Fail ("... BFCArena::AllocateRawInternal Failed to allocate memory for
# requested buffer of size N", "bad allocation" from a std::bad_alloc), torch's
# RuntimeError ("DefaultCPUAllocator: can't allocate memory", "CUDA out of memory").
_OUT_OF_MEMORY: Final = re.compile(
    r"failed to allocate memory|bad[_ ]alloc(?:ation)?\b|out of memory|"
    r"can(?:'|no)t allocate memory|not enough memory",
    re.IGNORECASE,
)


def _out_of_memory(exc: BaseException) -> bool:
    """Whether ``exc`` is an engine's out-of-memory error (not a ``MemoryError``).

    Only ONNX Runtime's exceptions (their module is ``onnxruntime.*``; all derive from
    ``Exception`` alone) and ``RuntimeError`` (torch's) are read: a message of cartag's
    own, or any other, that quotes such words is not an allocation that failed.
    """
    engine = type(exc).__module__.split(".", 1)[0] == "onnxruntime"
    if not engine and not isinstance(exc, RuntimeError):
        return False
    return _OUT_OF_MEMORY.search(str(exc)) is not None


def local_failure(exc: BaseException) -> bool:
    """Whether a failed load (a :class:`ModelError` of :mod:`~cartag.deploy.loadcheck`) is
    the host's, not the files'.

    True when an I/O error, a ``MemoryError`` or an engine's out-of-memory error (ONNX
    Runtime's and torch's are not ``MemoryError``) caused it, anywhere in its chain of
    causes (the load check wraps them): reading or loading the files failed on this host.
    That includes the version's folder missing here (a lost mount) while the registry
    holds it, hashed at registration (the hash is checked before the files load, so
    memory running out while loading files that match it says nothing of them). False
    when the files themselves are wrong — changed since registration, something else in
    the folder's place, not a model, another version, failing the smoke check — which
    every host sharing the data dir finds too.
    """
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        if isinstance(current, _LOCAL_CAUSES) or _out_of_memory(current):
            return True
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return False


# The longest wait between two tries of a version that failed for a reason of this host;
# the first waits CARTAG_MODEL_POLL_S, each next one twice as long.
RETRY_MAX_S: Final[float] = 300.0


@dataclass(frozen=True)
class _Retry:
    """A version that failed to load here for a reason of this host, and when to try again."""

    version: str
    attempts: int
    at: dt.datetime


# How many earlier production versions a server tries when production cannot load:
# each try loads and smoke-checks a model, and the start waits for them.
PREVIOUS_TRIES = 3


def startup_model(
    db: Database, settings: Settings, *, clock: Clock, classifier: Classifier | None = None
) -> Classifier:
    """The model a server starts with (blocking: run it in a thread from async code).

    On a first start the bundled model (or ``CARTAG_MODEL_DIR``) is registered as
    production. Then: ``classifier`` if given (tests inject one), else the production
    model; if that cannot load, the last version that loaded as production or an
    earlier production version (:func:`load_last_loaded`), else the bundled /
    ``CARTAG_MODEL_DIR`` model, each fallback logged as an error, so a broken registry
    entry never keeps a server down nor silently takes it back to the bundled model.

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
            return load_production(db, settings, reuse=classifier, clock=clock) or classifier
        model = load_production(db, settings, clock=clock) or load_last_loaded(db, settings)
        if model is not None:
            return model
        configured = load_classifier(settings)
        log.error(
            "serving the configured model %s (bundled or CARTAG_MODEL_DIR): neither production "
            "nor the last version that loaded can; fix or roll back production",
            configured.version,
        )
        return configured
    ensure_initial(db, settings, clock=clock, reuse=classifier)
    return classifier


def load_production(
    db: Database,
    settings: Settings,
    *,
    reuse: Classifier | None = None,
    clock: Clock | None = None,
) -> Classifier | None:
    """The loaded, smoke-checked production model; None (logged) when unset or broken.

    With ``clock``, a model that loads is recorded as the last that did
    (:func:`record_last_loaded`).
    """
    with db.read() as session:
        row = get_alias(session, PRODUCTION)
    if row is None:
        return None
    try:
        model = load_registered(settings, row, reuse=reuse)
    except ModelError as exc:
        log.error("production model %s cannot serve here: %s", row.version, exc.message)
        _note_problem(settings, row.version, exc.message)
        return None
    _note_problem(settings, row.version, None)
    if clock is not None:
        record_last_loaded(db, row.version, clock=clock)
    return model


def load_last_loaded(
    db: Database, settings: Settings, *, reuse: Classifier | None = None
) -> Classifier | None:
    """The model to serve when production cannot load, loaded and smoke-checked.

    First the last version that loaded as production (:data:`LAST_LOADED`), then the
    versions production named before, newest first (at most :data:`PREVIOUS_TRIES` in
    all): a server that had loaded production before its files broke recorded
    production itself as the last that loaded, and must still not fall back to the
    bundled model while an earlier version can serve.

    Returns:
        The model, or None (logged) when no earlier version can load.
    """
    with db.read() as session:
        wanted = repo.alias_version(session, PRODUCTION)
        last = get_alias(session, LAST_LOADED)
        candidates = [] if last is None else [(last, "the last model that loaded as production")]
        for deployment in reversed(history(session, PRODUCTION)):
            row = repo.find_version(session, deployment.version)
            if row is not None:
                candidates.append((row, "the production model before it"))
    tried: set[str | None] = {wanted}
    for row, what in candidates:
        # Refused or archived versions are not candidates: an operator retired them.
        if row.version in tried or row.status != REGISTERED:
            continue
        if len(tried) > PREVIOUS_TRIES:
            break
        tried.add(row.version)
        model = _load_previous(settings, row, what, reuse=reuse)
        if model is not None:
            log.error(
                "serving %s, %s, instead of production %s, which cannot serve here; "
                "fix production or roll it back (cartag models rollback)",
                row.version,
                what,
                wanted,
            )
            return model
    return None


def _load_previous(
    settings: Settings, row: ModelVersionRow, what: str, *, reuse: Classifier | None
) -> Classifier | None:
    try:
        return load_registered(settings, row, reuse=reuse)
    except ModelError as exc:
        log.error("%s, %s, cannot serve either: %s", what, row.version, exc.message)
        _note_problem(settings, row.version, exc.message)
        return None


def record_last_loaded(db: Database, version: str, *, clock: Clock) -> None:
    """Remember ``version`` as the last production model that loaded (best effort: logged)."""
    by = f"{socket.gethostname()}:{os.getpid()}"[:128]
    try:
        with db.write() as session:
            repo.record_last_loaded(session, version, by=by, now=clock.now())
    except Exception as exc:  # noqa: BLE001 - serving must not depend on this bookkeeping
        log.warning(
            "could not record %s as the last model that loaded: %r",
            version,
            getattr(exc, "orig", None) or exc,
        )


class ModelWatcher:
    """Keeps a running service on the model the ``production`` alias names.

    :meth:`check` reads the alias (one primary-key read); when it points at a version
    this server has not acted on yet, the model is loaded and smoke-checked in a
    worker thread, then swapped into the service: requests never wait on the load.
    A version whose files are bad is marked refused (for every server), logged, and not
    tried again by this process; one that failed for a reason of this host (an I/O error,
    memory running out: :func:`local_failure`) is logged and
    tried again after ``model_poll_s`` seconds, then twice as long each time (at most
    :data:`RETRY_MAX_S`), and is never refused for it. Either way the old model keeps
    serving. While the served model is not the one the
    alias names, ``telemetry.model_fallback(wanted, serving)`` says so
    (``cartag_model_fallback``), and ``telemetry.model_host_failures(version, tries)``
    while that is a failure of this host being retried
    (``cartag_model_host_load_failures``); a model swapped in is recorded as the last that
    loaded.

    Args:
        db: The store.
        settings: Loading settings and ``model_poll_s``.
        service: Anything with ``classifier`` and ``swap_classifier(new)``
            (:class:`cartag.pipeline.classify.ClassifyService`).
        alias: The alias to follow.
        telemetry: Told about fallbacks; default: the service's ``telemetry``, if any.
        clock: Time source; default: the service's ``clock``, else the system clock.
    """

    def __init__(
        self,
        db: Database,
        settings: Settings,
        service: Any,
        *,
        alias: str = PRODUCTION,
        telemetry: Telemetry | None = None,
        clock: Clock | None = None,
    ) -> None:
        self.db = db
        self.settings = settings
        self.service = service
        self.alias = alias
        self.telemetry = telemetry or getattr(service, "telemetry", None) or Telemetry()
        self.clock = clock or getattr(service, "clock", None) or SystemClock()
        self.seen: str | None = None
        # The version the alias named at the last look (prime or check): /healthz's
        # production_version.
        self.wanted: str | None = None
        self.refused: set[str] = set()
        # The version the alias names that failed here for a reason of this host.
        self.retry: _Retry | None = None
        self.swaps = 0
        self._lock = asyncio.Lock()

    def prime(self) -> None:
        """Take the alias as it is now as already acted on (the model served at start)."""
        with self.db.read() as session:
            self.seen = repo.alias_version(session, self.alias)
        self._report(self.seen)

    def _report(self, wanted: str | None) -> None:
        """Tell telemetry whether this server serves the version the alias names."""
        self.wanted = wanted
        if self.alias != PRODUCTION:
            return
        fallback = wanted is not None and wanted != self.serving
        retry = self.retry if fallback and self.retry and self.retry.version == wanted else None
        try:
            self.telemetry.model_fallback(wanted if fallback else None, self.serving)
            self.telemetry.model_host_failures(
                retry.version if retry else None, retry.attempts if retry else 0
            )
        except Exception:  # noqa: BLE001 - metrics must never stop the watcher
            log.exception("telemetry failed on a model fallback")

    @property
    def serving(self) -> str:
        return str(self.service.classifier.version)

    @property
    def fallback(self) -> bool:
        """Whether this server serves another model than the one the alias names."""
        return self.wanted is not None and self.wanted != self.serving

    @property
    def fallback_reason(self) -> str | None:
        """Why the alias's model is not served here, in one line (None: it is)."""
        if not self.fallback:
            return None
        problem = load_problem(self.settings, str(self.wanted))
        if problem is None:
            problem = "it has not been loaded on this server yet"
        retry = self.retry
        if retry is not None and retry.version == self.wanted:
            problem += (
                f" (a failure of this host, not of the files: try {retry.attempts + 1} at "
                f"{retry.at:%H:%M:%S} UTC)"
            )
        return f"{self.alias} model {self.wanted} cannot serve here: {problem}"

    async def check(self) -> str | None:
        """Swap to the alias's version if it changed.

        Returns:
            The version swapped to, or None when nothing changed or the load failed.
        """
        async with self._lock:
            # Off the event loop: a database round trip would stall every request.
            version = await asyncio.to_thread(self._alias_version)
            if version is None or version == self.seen or version in self.refused:
                self._report(version)  # e.g. a rollback to the model served: no more fallback
                return None
            if version == self.serving:
                self.seen = version
                self.retry = None
                self._report(version)
                return None
            retry = self.retry if self.retry and self.retry.version == version else None
            if retry is not None and self.clock.now() < retry.at:
                self._report(version)  # still waiting to try again
                return None
            row = await asyncio.to_thread(self._find_version, version)
            try:
                if row is None:
                    raise ModelError(f"{self.alias} names {version}, which is not registered")
                model = await asyncio.to_thread(
                    load_registered, self.settings, row, reuse=self.service.classifier
                )
            except ModelError as exc:
                if row is not None and local_failure(exc):
                    self._retry_later(version, 1 + (retry.attempts if retry else 0), exc)
                    self._report(version)
                    return None
                self.retry = None
                self.refused.add(version)
                _note_problem(self.settings, version, exc.message)
                log.error(
                    "model %s refused, still serving %s: %s", version, self.serving, exc.message
                )
                await asyncio.to_thread(self._mark_refused, version, exc.message)
                self._report(version)
                return None
            old = self.service.swap_classifier(model)
            _note_problem(self.settings, version, None)
            self.retry = None
            self.seen = version
            self.swaps += 1
            log.info("hot-swapped model %s -> %s", old.version, version)
            self._report(version)
            if self.alias == PRODUCTION:
                await asyncio.to_thread(record_last_loaded, self.db, version, clock=self.clock)
            return version

    def _alias_version(self) -> str | None:
        with self.db.read() as session:
            return repo.alias_version(session, self.alias)

    def _find_version(self, version: str) -> ModelVersionRow | None:
        with self.db.read() as session:
            return repo.find_version(session, version)

    def _retry_later(self, version: str, attempts: int, exc: ModelError) -> None:
        """Try ``version`` again later: it failed here for a reason of this host.

        Not refused: a disk read error or memory running out on one host said nothing of
        the files, and a refusal is for the whole fleet (it can never be promoted again).
        """
        delay = min(RETRY_MAX_S, self.settings.model_poll_s * 2 ** (attempts - 1))
        self.retry = _Retry(version, attempts, self.clock.now() + dt.timedelta(seconds=delay))
        _note_problem(self.settings, version, exc.message)
        log.warning(
            "model %s could not load on this host (try %d), still serving %s: %s; a failure "
            "of this host, not of the files (not refused): trying again in %.0f s",
            version,
            attempts,
            self.serving,
            exc.message,
            delay,
        )

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
