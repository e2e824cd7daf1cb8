"""Plain factory functions for registry scenarios: models registered, promoted, damaged.

A :class:`Scene` is a registry that holds the bundled model as production (as on a
first start) plus a folder to write new model folders in; the functions below act on
it with the scene's clock and the session's classifier (whose backbone is shared).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cartag.clock import FakeClock
from cartag.deploy import promote as promotion
from cartag.deploy.registry import ensure_initial, register_model
from cartag.models.classifier import Classifier
from cartag.net.fetch import Fetcher
from cartag.pipeline.classify import ClassifyService
from cartag.settings import Settings
from cartag.store.db import Database
from cartag.store.tables import DeploymentRow
from cartag.telemetry import Telemetry
from tests.support.models import make_model_dir


@dataclass
class Scene:
    """A registry with the bundled model as production.

    Attributes:
        db: The store.
        settings: Its ``data_dir`` holds the registered model folders.
        clock: The time every registration and promotion is stamped with.
        classifier: The session's bundled model (its backbone is shared on loads).
        folders: Where new model folders are written before they are registered.
        initial: The version of the bundled model (production at the start).
    """

    db: Database
    settings: Settings
    clock: FakeClock
    classifier: Classifier
    folders: Path
    initial: str


def make_scene(
    db: Database, settings: Settings, classifier: Classifier, folders: Path, clock: FakeClock
) -> Scene:
    """Register the bundled model as production (a first start) and return the scene."""
    row = ensure_initial(db, settings, clock=clock, reuse=classifier)
    assert row is not None
    folders.mkdir(parents=True, exist_ok=True)
    return Scene(db, settings, clock, classifier, folders, row.version)


def model_dir(scene: Scene, version: str, **options: Any) -> Path:
    """A new model folder of ``version`` (``options``: :func:`make_model_dir`'s)."""
    count = sum(1 for _ in scene.folders.iterdir())
    return make_model_dir(scene.folders / f"{count}-{version}", version, **options)


def register(scene: Scene, version: str, *, folder: Path | None = None, **kwargs: Any) -> str:
    """Register ``folder`` (default: a new working model of ``version``); returns the version.

    ``kwargs`` go to :func:`~cartag.deploy.registry.register_model` (``metrics``, ...).
    """
    row = register_model(
        scene.db,
        scene.settings,
        folder or model_dir(scene, version),
        created_by="test",
        clock=scene.clock,
        reuse=scene.classifier,
        **kwargs,
    )
    return row.version


def promote(scene: Scene, version: str, *, by: str = "t", **kwargs: Any) -> DeploymentRow:
    """Promote ``version`` (``kwargs``: ``alias``, ``force``)."""
    return promotion.promote(
        scene.db,
        scene.settings,
        version,
        by=by,
        clock=scene.clock,
        reuse=scene.classifier,
        **kwargs,
    )


def register_and_promote(scene: Scene, version: str) -> DeploymentRow:
    """Register a new working model of ``version`` and promote it to production."""
    register(scene, version)
    return promote(scene, version)


def rollback(scene: Scene) -> DeploymentRow:
    """Roll production back."""
    return promotion.rollback(scene.db, scene.settings, by="t", clock=scene.clock)


def damage(scene: Scene, version: str, head: str = "type_head.npz", *, keep: int = 100) -> None:
    """Truncate one file of a registered version to its first ``keep`` bytes."""
    path = scene.settings.data_dir / "models" / version / head
    path.write_bytes(path.read_bytes()[:keep])


@asynccontextmanager
async def serving(
    scene: Scene, classifier: Classifier | None = None, telemetry: Telemetry | None = None
) -> AsyncIterator[ClassifyService]:
    """A classify service on the scene's store, closed (with its fetcher) afterwards."""
    fetcher = Fetcher(scene.settings)
    service = ClassifyService(
        scene.settings,
        scene.db,
        fetcher,
        classifier or scene.classifier,
        scene.clock,
        telemetry=telemetry,
    )
    try:
        yield service
    finally:
        service.close()
        await fetcher.aclose()
