"""Int8 heads for the candidates of ``cartag train``, shipped only when they keep up.

A server serves int8 by default (``CARTAG_PRECISION``): the int8 backbone and heads
fitted on its embeddings, about twice the backbone's throughput. A folder without int8
heads is served fp32. So, when the sweep asks for it (``int8: true``, the default) and
the settings serve int8, each trial also fits its heads on the int8 embeddings of the
same rows, with the same configuration and seed, and scores them on the same test sets.
They ship only if, on every test set, they lose at most ``int8_tolerance`` (0.005 by
default: issue 18's gate) of image-type macro recall and of color top-1 against the
float heads; otherwise the folder has no ``int8`` block, is served fp32, and its card
and config say which set failed.

The int8 backbone's activation ranges (:func:`network_ranges`): production's
``quantization.json`` when the trial runs on production's network, so that its int8
backbone is production's (a hot swap then loads no network, and the int8 embeddings the
service cached for the dataset's images are reused); otherwise measured once per network
on :data:`~cartag.training.fitting.quantization.CALIBRATION_PHOTOS` train-split photos
of the dataset, and kept beside the study's candidates for the trials and runs after.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
import os
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, Literal

import numpy as np

from cartag.errors import ModelError
from cartag.models.backbone import PREPROCESS_ID, Backbone, BackboneSpec
from cartag.models.classifier import draft_size_for, read_config
from cartag.models.folder import int8_config
from cartag.models.onnx_files import onnx_model
from cartag.models.quantization import QUANTIZATION_NAME, Quantization, read_quantization
from cartag.settings import Settings
from cartag.training.fitting.quantization import (
    CALIBRATION_BATCH,
    CALIBRATION_PHOTOS,
    GATE_TOLERANCE,
    INT8_HEADS,
    write_ranges,
)
from cartag.training.sweep.candidates import (
    Heads,
    Int8Part,
    TrialParams,
    evaluate_heads,
    head_metadata,
    remove_int8_files,
    train_candidate,
)
from cartag.training.sweep.sweep_config import SweepConfig
from cartag.training.sweep.sweep_data import PLACEHOLDER, DatasetView, Features, FeatureSource

log = logging.getLogger(__name__)

# Salt of the hash order that picks a dataset's calibration photos (calibration_rows).
_SALT: Final[str] = "cartag-int8-calibration-dataset-v1:"
# Smallest test set (images with the task's label) on which the gate is judged: below
# it one image moves a figure by more than the default tolerance (1/200 = 0.005), so a
# single answer that rounds the other way would refuse int8 heads that lose nothing
# measurable. Smaller sets are shown, not judged.
GATE_MIN_N: Final[int] = 200
# What each task's gate row compares (the figures the bundled model's gate uses).
GATE_FIGURES: Final[dict[str, tuple[str, str]]] = {
    "image_type": ("macro_recall", "type macro recall"),
    "color": ("accuracy", "color top-1"),
}


@dataclass(frozen=True)
class Ranges:
    """The activation ranges a sweep's int8 backbone uses for one network.

    Attributes:
        path: The ``quantization.json``.
        quantization: Its content.
        origin: ``production`` (production's own ranges) or ``dataset`` (measured on
            the dataset's train split by this sweep).
    """

    path: Path
    quantization: Quantization
    origin: str


@dataclass
class Int8Heads:
    """A trial's heads fitted on int8 embeddings, and how they compare with its float ones.

    Attributes:
        heads: The int8 type and color heads.
        ranges: The ranges of the int8 backbone they were fitted on.
        backbone_id: That backbone's id (``<float id>+int8@<ranges digest[:8]>``).
        validation: Their metrics on the validation fold.
        test: Their metrics on every test set.
        gate: One row per (test set, task) of :func:`gate_rows`.
        tolerance: The largest loss allowed.
    """

    heads: Heads
    ranges: Ranges
    backbone_id: str
    validation: dict[str, Any]
    test: dict[str, Any]
    gate: list[dict[str, Any]] = field(default_factory=list)
    tolerance: float = GATE_TOLERANCE

    @property
    def passed(self) -> bool:
        """Whether every judged gate row is within the tolerance (rows of sets under
        :data:`GATE_MIN_N` images are not judged)."""
        return all(row["within"] for row in self.gate if row["judged"])

    def failures(self) -> list[str]:
        """The failing rows, readable: ``REF:test type macro recall 0.912 -> 0.900``."""
        return [
            f"{r['test_set']} {r['metric']} {r['fp32']:.4f} -> {r['int8']:.4f} (n={r['n']})"
            for r in self.gate
            if r["judged"] and not r["within"]
        ]


def serving(settings: Settings) -> Literal["int8", "fp32"]:
    """Which heads servers of ``settings`` answer with where a folder has both: ``int8``
    (precision int8 on the onnx engine) or ``fp32``."""
    return "int8" if settings.precision == "int8" and settings.engine == "onnx" else "fp32"


def gate_rows(
    fp32: dict[str, Any], int8: dict[str, Any], tolerance: float = GATE_TOLERANCE
) -> list[dict[str, Any]]:
    """Compare float and int8 heads on every test set both were scored on.

    Args:
        fp32: ``{set: {task: metrics}}`` of the float heads (registry format).
        int8: The same of the int8 heads.
        tolerance: The largest loss allowed.

    Returns:
        One dict per (set, task) present in both: ``test_set``, ``task``, ``metric``,
        ``n``, ``fp32``, ``int8``, ``diff`` (int8 - fp32, 4 decimals), ``within`` and
        ``judged`` (``n`` >= :data:`GATE_MIN_N`).
    """
    rows = []
    for set_name in sorted(fp32):
        for task, (figure, metric) in GATE_FIGURES.items():
            ours = fp32[set_name].get(task)
            theirs = int8.get(set_name, {}).get(task)
            if ours is None or theirs is None:
                continue
            diff = round(float(theirs[figure]) - float(ours[figure]), 4)
            rows.append(
                {
                    "test_set": set_name,
                    "task": task,
                    "metric": metric,
                    "n": int(ours["n"]),
                    "fp32": float(ours[figure]),
                    "int8": float(theirs[figure]),
                    "diff": diff,
                    # Metrics are rounded to 4 decimals: a loss of exactly the tolerance passes.
                    "within": diff >= -tolerance - 1e-9,
                    "judged": int(ours["n"]) >= GATE_MIN_N,
                }
            )
    return rows


def calibration_rows(view: DatasetView, n: int = CALIBRATION_PHOTOS) -> np.ndarray:
    """The dataset rows whose images calibrate an int8 backbone.

    Train-split rows not labelled Placeholder (all train rows when every one is), in
    the order of ``sha256(salt + content hash)``: the same photos on every run and
    machine, never a test image.

    Returns:
        int64 (min(n, rows),) row indices.
    """
    train = view.train
    photos = train[view.type_idx[train] != PLACEHOLDER]
    pool = photos if len(photos) else train
    ordered = sorted(
        (int(i) for i in pool),
        key=lambda i: hashlib.sha256((_SALT + view.shas[i]).encode()).hexdigest(),
    )
    return np.asarray(ordered[:n], dtype=np.int64)


def production_ranges(production_dir: Path, backbone_id: str) -> Path | None:
    """Production's ``quantization.json`` when production runs on ``backbone_id``.

    None when production has no usable int8 block or another network.
    """
    try:
        config = read_config(production_dir)
        block = int8_config(production_dir, config)
    except ModelError:
        return None
    if block is None or config.get("backbone", {}).get("backbone_id") != backbone_id:
        return None
    path = production_dir / str(block["quantization"])
    return path if path.is_file() else None


def network_ranges(
    source: FeatureSource,
    view: DatasetView,
    spec: BackboneSpec,
    production_dir: Path,
    folder: Path,
) -> Ranges:
    """The ranges of ``spec``'s int8 backbone: production's, kept ones, or measured now.

    Args:
        source: Loads the float backbone and the dataset's images.
        view: The dataset (its train split calibrates).
        spec: The trial's network.
        production_dir: Production's model folder.
        folder: Where measured ranges are kept
            (``<folder>/<backbone id>/<photos sha256[:16]>/quantization.json``).

    Raises:
        ModelError: The float ONNX export or the calibration failed.
    """
    backbone = source.backbone(spec)
    reused = production_ranges(production_dir, backbone.backbone_id)
    if reused is not None:
        try:
            return Ranges(reused, read_quantization(reused), "production")
        except ModelError as exc:
            log.warning("production's ranges are unusable (%s); measuring them", exc)
    rows = calibration_rows(view)
    photos = hashlib.sha256("\n".join(view.shas[i] for i in rows).encode()).hexdigest()
    # Keyed by network and photos: every sweep calibrating on the same images (another
    # sweep file, a resumed study, a dataset version with the same train split) reuses them.
    path = folder / backbone.backbone_id / photos[:16] / QUANTIZATION_NAME
    if path.is_file():
        try:
            return Ranges(path, read_quantization(path), "dataset")
        except ModelError:
            path.unlink(missing_ok=True)  # a damaged file from an earlier run: measured again
    path.parent.mkdir(parents=True, exist_ok=True)
    calibration: dict[str, Any] = {
        "photos": len(rows),
        "dataset_ref": view.ref,
        "chosen": (
            f"train-split images of {view.ref} not labelled Placeholder, in the order of "
            f"sha256('{_SALT}' + content hash); decoded and preprocessed as the service does"
        ),
        "photos_sha256": photos,
    }
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        quantization = write_ranges(
            backbone,
            _fp32_model(backbone, source),
            _batches(source, view, rows, backbone),
            calibration,
            tmp,
        )
        # The first writer wins: processes sharing the sweep may measure at once (on
        # other CPUs, other ranges), and a file that changed under a trial's heads would
        # make another int8 backbone than the one they were fitted on.
        try:
            os.link(tmp, path)
        except FileExistsError:
            return Ranges(path, read_quantization(path), "dataset")
    finally:
        tmp.unlink(missing_ok=True)
    return Ranges(path, quantization, "dataset")


def _fp32_model(backbone: Backbone, source: FeatureSource) -> bytes:
    """The float ONNX export of ``backbone`` (the service's cached one when present)."""
    cache = source.settings.resolved_cache_dir
    stem = cache / "onnx" / f"{backbone.backbone_id}-{PREPROCESS_ID}"
    _, model = onnx_model(backbone.variant, backbone.weights_path, backbone.backbone_id, 1, stem)
    return model.read_bytes() if isinstance(model, Path) else model


def _batches(
    source: FeatureSource, view: DatasetView, rows: np.ndarray, backbone: Backbone
) -> Iterator[np.ndarray]:
    """float32 (B, 3, S, S) inputs of ``rows``, decoded as the service decodes them
    (the calibration's progress reported as they are taken)."""
    draft = draft_size_for(backbone.input_size)
    stage = f"int8 calibration {backbone.variant}"
    for start in range(0, len(rows), CALIBRATION_BATCH):
        if source.progress:
            source.progress(stage, start, len(rows))
        chunk = rows[start : start + CALIBRATION_BATCH]
        yield backbone.preprocess([source.image(view.blob_paths[i], draft) for i in chunk])
    if source.progress:
        source.progress(stage, len(rows), len(rows))


def save_int8(out_dir: Path, int8: Int8Heads, metadata: dict[str, Any]) -> Int8Part:
    """Write the int8 heads and ranges into a candidate folder when they passed the gate.

    Args:
        out_dir: The candidate folder (created).
        int8: The trial's int8 heads.
        metadata: What the float heads record of their provenance (dataset, time,
            preprocessing); ``backbone_id`` is replaced by the int8 backbone's.

    Returns:
        The config's ``int8`` block (None when the gate failed: nothing is written),
        the record for ``training.int8`` and the digest of what was written.
    """
    record: dict[str, Any] = {
        "shipped": int8.passed,
        "tolerance": int8.tolerance,
        "ranges": int8.ranges.origin,
        "backbone_id": int8.backbone_id,
        "gate": int8.gate,
    }
    if not int8.passed:
        remove_int8_files(out_dir)
        record["why"] = (
            f"int8 lost more than {int8.tolerance} on "
            + "; ".join(int8.failures())
            + ": served fp32"
        )
        return Int8Part(None, record, "")
    for task, head in (("image_type", int8.heads.image_type), ("color", int8.heads.color)):
        head.metadata.update(
            {
                **metadata,
                "backbone_id": int8.backbone_id,
                "task": task,
                "metrics": {"validation": int8.validation.get(task)},
            }
        )
    int8.heads.image_type.save(out_dir / INT8_HEADS["image_type"])
    int8.heads.color.save(out_dir / INT8_HEADS["color"])
    shutil.copyfile(int8.ranges.path, out_dir / QUANTIZATION_NAME)
    block = {
        "quantization": QUANTIZATION_NAME,
        "backbone_id": int8.backbone_id,
        "heads": dict(INT8_HEADS),
        "ranges_sha256": int8.ranges.quantization.digest,
        "calibration": int8.ranges.quantization.calibration,
    }
    digest = int8.heads.image_type.digest() + int8.heads.color.digest() + int8.backbone_id
    return Int8Part(block, record, digest)


def train_int8(
    features: Features,
    view: DatasetView,
    params: TrialParams,
    fp32_test: dict[str, Any],
    ranges: Ranges,
    *,
    validation: np.ndarray,
    mlp_epochs: int,
    noise_std: float,
    seed: int,
    tolerance: float = GATE_TOLERANCE,
) -> Int8Heads:
    """Fit a trial's heads on int8 embeddings as its float ones were fitted, and gate them.

    Args:
        features: Inputs of every row of ``view`` from the int8 backbone of ``ranges``.
        view: The dataset.
        params: The trial's configuration (the float heads').
        fp32_test: The float heads' metrics on every test set.
        ranges: The int8 backbone's ranges.
        validation: bool (N,) the validation fold (the float heads').
        mlp_epochs: As the float heads'.
        noise_std: As the float heads'.
        seed: As the float heads'.
        tolerance: The largest loss allowed on any row.
    """
    heads, val = train_candidate(
        features,
        view,
        params,
        validation=validation,
        mlp_epochs=mlp_epochs,
        noise_std=noise_std,
        seed=seed,
    )
    test = {
        name: evaluate_heads(heads, features, view, rows) for name, rows in view.test_sets.items()
    }
    return Int8Heads(
        heads,
        ranges,
        features.backbone_id,
        val,
        test,
        gate_rows(fp32_test, test, tolerance),
        tolerance,
    )


# (network, flipped, int8 ranges or None) -> the dataset's inputs from that backbone
FeaturesOf = Callable[[BackboneSpec, bool, Path | None], Features]


class Int8Trials:
    """Each trial's int8 heads, for one sweep: ranges found once per network.

    Args:
        config: The sweep (``int8``, ``int8_tolerance``, ``mlp_epochs``, ``noise_std``).
        settings: ``precision`` (int8 heads are made only when it is int8) and
            ``engine`` (a server serves them only on onnx).
        source: The sweep's feature source.
        view: The dataset.
        production_dir: Production's model folder (whose ranges may be reused).
        folder: Where the ranges measured on the dataset are kept.
        validation: bool (N,) the validation fold.
    """

    def __init__(
        self,
        config: SweepConfig,
        settings: Settings,
        source: FeatureSource,
        view: DatasetView,
        production_dir: Path,
        folder: Path,
        validation: np.ndarray,
    ) -> None:
        self.enabled = config.int8 and settings.precision == "int8"
        # Whether a server of these settings answers with the int8 heads (the metrics
        # registered are of what it answers).
        self.served = self.enabled and serving(settings) == "int8"
        self.config = config
        self.source = source
        self.view = view
        self.production_dir = production_dir
        self.folder = folder
        self.validation = validation
        self._ranges: dict[BackboneSpec, Ranges | ModelError] = {}

    def ranges(self, spec: BackboneSpec) -> Ranges:
        """The ranges of ``spec``'s int8 backbone (a failure is remembered, not retried).

        Raises:
            ModelError: They cannot be found or measured.
        """
        if spec not in self._ranges:
            try:
                self._ranges[spec] = network_ranges(
                    self.source, self.view, spec, self.production_dir, self.folder
                )
            except ModelError as exc:
                self._ranges[spec] = exc
        found = self._ranges[spec]
        if isinstance(found, ModelError):
            raise found
        return found

    def make(
        self,
        spec: BackboneSpec,
        params: TrialParams,
        seed: int,
        fp32_test: dict[str, Any],
        out_dir: Path,
        now: dt.datetime,
        features_of: FeaturesOf,
    ) -> tuple[Int8Part, Int8Heads | None] | None:
        """Fit, gate and (when they pass) write one trial's int8 heads into ``out_dir``.

        Returns:
            None when the sweep makes no int8 heads; else what the folder records and
            the heads (None when the int8 backbone could not be made: the folder is
            then served fp32, and its card says why).
        """
        if not self.enabled:
            return None
        tolerance = self.config.int8_tolerance
        try:
            ranges = self.ranges(spec)
            try:
                features = features_of(spec, params.augmentation == "flip", ranges.path)
            except ModelError as exc:
                self._ranges[spec] = exc  # the backbone of these ranges: not made again
                raise
        except ModelError as exc:
            log.warning("no int8 heads for this trial: %s", exc)
            record: dict[str, Any] = {
                "shipped": False,
                "tolerance": tolerance,
                "ranges": None,
                "backbone_id": None,
                "gate": [],
                "why": f"the int8 backbone could not be made ({exc}): served fp32",
            }
            return Int8Part(None, record, ""), None
        heads = train_int8(
            features,
            self.view,
            params,
            fp32_test,
            ranges,
            validation=self.validation,
            mlp_epochs=self.config.mlp_epochs,
            noise_std=self.config.noise_std,
            seed=seed,
            tolerance=tolerance,
        )
        out_dir.mkdir(parents=True, exist_ok=True)
        metadata = head_metadata(self.source.backbone(spec), self.view, now)
        return save_int8(out_dir, heads, metadata), heads
