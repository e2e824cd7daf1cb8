"""The registry as a sweep is handed it: register candidates, record metrics, name the best.

Training does not import deploy (they are sibling use cases): the caller of
:func:`cartag.training.sweep.sweep.run_sweep` (the CLI) builds a :class:`SweepRegistry`
and passes it in; it satisfies :class:`cartag.training.sweep.production.ModelRegistry`.
Each method is one function of :mod:`cartag.deploy.registry` or
:mod:`cartag.deploy.promote`, bound to one store, settings and clock.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from cartag.clock import Clock
from cartag.deploy import promote, registry
from cartag.settings import Settings
from cartag.store.db import Database


class SweepRegistry:
    """The model registry of one store.

    Args:
        db: The store.
        settings: ``data_dir`` and the loading settings.
        clock: Time source.
    """

    def __init__(self, db: Database, settings: Settings, clock: Clock) -> None:
        self.db = db
        self.settings = settings
        self.clock = clock

    def production_model_dir(self) -> Path | None:
        """The folder of the ``production`` model, or None when the alias is not set."""
        return registry.production_model_dir(self.db, self.settings)

    def ensure_initial(self) -> None:
        """On an empty registry, register what a first server start would, as production."""
        registry.ensure_initial(self.db, self.settings, clock=self.clock)

    def register(
        self,
        model_dir: Path,
        *,
        created_by: str,
        dataset_ref: str | None,
        metrics: dict[str, Any],
    ) -> None:
        """Register a model folder with its metrics (:func:`~.registry.register_model`)."""
        registry.register_model(
            self.db,
            self.settings,
            model_dir,
            created_by=created_by,
            clock=self.clock,
            dataset_ref=dataset_ref,
            metrics=metrics,
        )

    def record_metrics(self, version: str, metrics: dict[str, Any]) -> None:
        """Merge evaluation results into a registered version's metrics."""
        registry.record_metrics(self.db, version, metrics)

    def point_candidate(self, version: str, *, by: str, reason: str) -> None:
        """Point ``candidate`` at ``version`` (:func:`~.promote.point_candidate`)."""
        promote.point_candidate(self.db, version, by=by, reason=reason, clock=self.clock)
