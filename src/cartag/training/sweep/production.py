"""What a sweep needs of the model registry, and the production model scored on its test sets.

A sweep registers each trial's model, records production's metrics on the same sets and
points the ``candidate`` alias at its best trial. Training does not import deploy: the
caller hands :func:`cartag.training.sweep.sweep.run_sweep` a :class:`ModelRegistry`
(the CLI passes :class:`cartag.deploy.sweeps.SweepRegistry`).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, NamedTuple, Protocol

from cartag.errors import ModelError
from cartag.models.backbone import BackboneSpec
from cartag.models.classifier import BUNDLED_DIR, backbone_spec, read_config
from cartag.models.folder import precision_blocks
from cartag.models.heads import LinearHead, load_head
from cartag.settings import Settings
from cartag.store.db import Database
from cartag.store.model_versions import find_version
from cartag.training.sweep.candidates import Heads, evaluate_heads, stamped
from cartag.training.sweep.int8 import serving
from cartag.training.sweep.sweep_data import DatasetView, FeatureSource

log = logging.getLogger(__name__)


class ModelRegistry(Protocol):
    """The registry operations a sweep uses, bound to the project's store."""

    def production_model_dir(self) -> Path | None:
        """The folder of the ``production`` model, or None when the alias is not set."""
        ...

    def ensure_initial(self) -> None:
        """On an empty registry, register what a first server start would, as production."""
        ...

    def register(
        self,
        model_dir: Path,
        *,
        created_by: str,
        dataset_ref: str | None,
        metrics: dict[str, Any],
    ) -> None:
        """Register a model folder with its metrics (load-checked)."""
        ...

    def record_metrics(self, version: str, metrics: dict[str, Any]) -> None:
        """Merge evaluation results into a registered version's metrics."""
        ...

    def point_candidate(self, version: str, *, by: str, reason: str) -> None:
        """Point the ``candidate`` alias at ``version`` (no gates)."""
        ...


def production_model(
    db: Database, settings: Settings, registry: ModelRegistry
) -> tuple[Path, str, bool]:
    """Where production's model is: ``(folder, version, registered)``.

    The registry's ``production`` alias. On a registry that is still empty, the model a
    first server start would register (``CARTAG_MODEL_DIR`` or the bundled one) is
    registered as production first, as that start would do.
    """
    path = registry.production_model_dir()
    if path is None:
        registry.ensure_initial()
        path = registry.production_model_dir()
    if path is None:
        # Versions exist but none is production: compare with what a server would load.
        path = settings.model_dir if settings.model_dir is not None else BUNDLED_DIR
    version = str(read_config(path).get("version") or path.name)
    with db.read() as session:
        registered = find_version(session, version) is not None
    return path, version, registered


class ServedHeads(NamedTuple):
    """What a server of one precision and engine answers with, from a model folder.

    Attributes:
        heads: The heads it loads.
        spec: The network they run on (not loaded here).
        quantization: The int8 ranges file (None: fp32).
        backbone_id: The backbone id the folder's config names for those heads.
    """

    heads: Heads
    spec: BackboneSpec
    quantization: Path | None
    backbone_id: str | None


def load_heads(model_dir: Path, precision: str = "fp32", engine: str = "onnx") -> ServedHeads:
    """A model folder's heads as a server with ``precision`` and ``engine`` serves them."""
    config = read_config(model_dir)
    try:
        heads, wanted, quantization = precision_blocks(model_dir, config, precision, engine)
    except ModelError as exc:
        # A server refuses such a folder; production's was checked when it was
        # registered (perhaps at fp32): score what its fp32 heads answer.
        log.warning("the int8 block of %s is unusable (%s); scoring fp32", model_dir, exc)
        heads, wanted, quantization = precision_blocks(model_dir, config, "fp32", engine)
    type_head = LinearHead.load(model_dir / str(heads["image_type"]))
    color_head = load_head(model_dir / str(heads["color"]))
    backbone_id = wanted.get("backbone_id")
    return ServedHeads(
        Heads(type_head, color_head),
        backbone_spec(model_dir, config),
        quantization,
        None if backbone_id is None else str(backbone_id),
    )


def evaluate_model_dir(
    model_dir: Path,
    view: DatasetView,
    source: FeatureSource,
    precision: str = "fp32",
    engine: str = "onnx",
) -> tuple[dict[str, Any], str]:
    """Metrics of a model folder on every test set of ``view`` (cached embeddings), as a
    server with ``precision`` and ``engine`` answers, and the precision that is.

    A folder whose int8 backbone cannot be made is scored fp32, as a server falls back.
    """
    served = load_heads(model_dir, precision, engine)
    if served.quantization is not None:
        try:
            features = source.features(view, served.spec, quantization=served.quantization)
            if features.backbone_id != served.backbone_id:
                raise ModelError(
                    f"its ranges make {features.backbone_id}, not {served.backbone_id}"
                )
        except ModelError as exc:
            log.warning("the int8 backbone of %s cannot be used (%s); scoring fp32", model_dir, exc)
            return evaluate_model_dir(model_dir, view, source)
    else:
        features = source.features(view, served.spec)
    metrics = {
        name: evaluate_heads(served.heads, features, view, rows)
        for name, rows in view.test_sets.items()
    }
    return metrics, "fp32" if served.quantization is None else "int8"


def evaluate_production(
    db: Database,
    settings: Settings,
    view: DatasetView,
    source: FeatureSource,
    registry: ModelRegistry,
) -> dict[str, Any]:
    """Score the production model on the view's test sets, as this deployment's servers
    answer (``settings.precision`` and ``engine``), and record it in the registry.

    Returns:
        ``version``, ``registered``, ``model_dir``, ``metrics`` and ``precision``.
    """
    model_dir, version, registered = production_model(db, settings, registry)
    metrics, precision = evaluate_model_dir(
        model_dir, view, source, settings.precision, settings.engine
    )
    metrics = stamped(metrics, precision, serving(settings))
    if registered:
        registry.record_metrics(version, metrics)
    return {
        "version": version,
        "registered": registered,
        "model_dir": str(model_dir),
        "metrics": metrics,
        "precision": precision,
    }
