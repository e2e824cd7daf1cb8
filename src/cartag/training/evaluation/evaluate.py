"""Evaluate the classifier on labelled image files (``cartag evaluate``).

Ground truth comes from a CSV (:func:`labels_from_csv`) or from folder names
(:func:`labels_from_folders`); :func:`evaluate` runs the model over the files and
:func:`score` turns its records into per-task metrics. Everything here is plain
data so the CLI, the HTML report and the tests share it.
"""

from __future__ import annotations

import csv
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import numpy as np

from cartag.errors import InputError
from cartag.imaging.files import find_images
from cartag.models.classifier import Classifier
from cartag.models.files import predict_files
from cartag.training.evaluation.by_source import BySource, by_source, reports_by_source
from cartag.training.fitting.metrics import classification_report
from cartag.vocab import COLORS, IMAGE_TYPES, normalize_color, normalize_image_type

# Task name -> (vocabulary, the record key holding its scores).
TASKS: Final[dict[str, tuple[tuple[str, ...], str]]] = {
    "image_type": (IMAGE_TYPES, "type_scores"),
    "color": (COLORS, "color_scores"),
}
# CSV header spellings accepted for each task, first match wins.
_CSV_COLUMNS: Final[dict[str, tuple[str, ...]]] = {
    "image_type": ("image_type", "type"),
    "color": ("color", "colour"),
}


@dataclass(frozen=True)
class LabelledImage:
    """One image with its ground truth.

    Attributes:
        file: The image file.
        origin: Where the labels came from, for messages (``labels.csv:12`` or the folder).
        image_type: True type, or None when this image has no type label.
        color: True color, or None when this image has no color label.
        source: Where the image came from (a CSV ``source`` column), or None.
    """

    file: Path
    origin: str
    image_type: str | None = None
    color: str | None = None
    source: str | None = None

    def label(self, task: str) -> str | None:
        """The true label for ``task`` (``image_type`` or ``color``)."""
        return self.image_type if task == "image_type" else self.color


@dataclass
class GroundTruth:
    """Labelled images plus the rows that could not be used.

    Attributes:
        images: Labelled images whose file exists, in input order.
        missing: ``origin: path`` of each row whose file does not exist.
        unlabelled: Rows without any label (e.g. empty color and type cells).
    """

    images: list[LabelledImage]
    missing: list[str] = field(default_factory=list)
    unlabelled: int = 0

    def limited(self, limit: int | None) -> GroundTruth:
        """At most ``limit`` images, spread evenly over the list.

        Evenly spaced rather than the first ``limit`` so that a quick run over a
        sorted folder tree still sees every class.
        """
        if limit is None or limit >= len(self.images):
            return self
        n = len(self.images)
        picked = [self.images[i * n // limit] for i in range(limit)]
        return GroundTruth(picked, self.missing, self.unlabelled)

    def require_images(self) -> None:
        """Raise InputError, naming a missing file, if there is nothing to evaluate."""
        if not self.images:
            example = f"; e.g. {self.missing[0]}" if self.missing else ""
            raise InputError(
                f"no labelled image files to evaluate ({len(self.missing)} rows point at "
                f"missing files{example})",
                field="path",
            )


@dataclass(frozen=True)
class Mistake:
    """A wrong answer of one task.

    Attributes:
        path: The image file.
        true: The ground-truth label.
        predicted: The model's label.
        confidence: The model's score for ``predicted`` (the wrong class).
        true_score: The model's score for ``true``.
    """

    path: str
    true: str
    predicted: str
    confidence: float
    true_score: float


@dataclass
class TaskResult:
    """Metrics of one task.

    Attributes:
        task: ``image_type`` or ``color``.
        report: :func:`cartag.training.fitting.metrics.classification_report` output.
        mistakes: Wrong answers, highest wrong-class confidence first.
        colorless: Color task only: labelled images the model called Placeholder, for
            which the service answers no color (scored here on the color head alone).
    """

    task: str
    report: dict[str, Any]
    mistakes: list[Mistake]
    colorless: int = 0


@dataclass
class Evaluation:
    """The outcome of an evaluation run.

    Attributes:
        model_version: The classifier's version.
        n_labelled: Labelled images whose file exists.
        missing: Rows whose file does not exist.
        unreadable: ``(path, reason)`` of files the model could not read.
        tasks: Results per task that had at least one readable labelled image.
        unlabelled: Rows without any label.
        by_source: Per source, per task reports (:mod:`cartag.training.evaluation.by_source`);
            empty unless the images have sources.
    """

    model_version: str
    n_labelled: int
    missing: list[str]
    unreadable: list[tuple[str, str]]
    tasks: dict[str, TaskResult]
    unlabelled: int = 0
    by_source: BySource = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict of everything, mistakes included."""
        return {
            "model_version": self.model_version,
            "n_labelled": self.n_labelled,
            "n_evaluated": self.n_labelled - len(self.unreadable),
            "unlabelled": self.unlabelled,
            "missing": self.missing,
            "unreadable": [{"path": p, "reason": r} for p, r in self.unreadable],
            "tasks": {
                name: {
                    **result.report,
                    **({"colorless": result.colorless} if name == "color" else {}),
                    "mistakes": [vars(m) for m in result.mistakes],
                }
                for name, result in self.tasks.items()
            },
            **({"by_source": self.by_source} if self.by_source else {}),
        }


def _parse_label(task: str, value: str) -> str | None:
    """Vocabulary spelling of ``value``; None for an empty cell. Raises ValueError."""
    if not value.strip():
        return None
    if task == "image_type":
        return normalize_image_type(value)
    return normalize_color(value)


def labels_from_csv(csv_path: Path, root: Path) -> GroundTruth:
    """Read ground truth from a CSV with a ``path`` column and label columns.

    Label columns are ``image_type`` (or ``type``) and/or ``color``; an optional
    ``source`` column names where each image came from (per-source figures); other
    columns are ignored. An empty cell means "no label for that task". Relative
    paths are tried against the CSV's folder, then ``root``, then the CSV folder's
    parent (vcr-train's labels.csv writes ``vcr-train/<Color>/<file>``).

    Args:
        csv_path: The CSV file.
        root: The images folder given on the command line.

    Raises:
        InputError: The CSV can't be read, lacks the columns, or has a label
            outside the vocabulary (the message names the line and value).
    """
    try:
        with csv_path.open(newline="", encoding="utf-8-sig") as fh:
            reader = csv.DictReader(fh)
            fieldnames = [name for name in reader.fieldnames or [] if name]
            # line_num, not a count, so the messages stay right past blank lines.
            rows = [(reader.line_num, row) for row in reader]
    except UnicodeDecodeError as exc:
        raise InputError(
            f"{csv_path} is not UTF-8 text (byte {exc.start}: {exc.reason}); give the labels "
            "CSV (path plus image_type and/or color columns)",
            field="labels",
        ) from exc
    except (OSError, csv.Error) as exc:
        raise InputError(f"cannot read {csv_path}: {exc}", field="labels") from exc
    columns = {name.strip().lower(): name for name in fieldnames}
    if "path" not in columns:
        raise InputError(
            f"{csv_path} has no 'path' column (header: {', '.join(fieldnames) or 'none'})",
            field="labels",
        )
    task_columns = {
        task: next(columns[n] for n in names if n in columns)
        for task, names in _CSV_COLUMNS.items()
        if any(n in columns for n in names)
    }
    if not task_columns:
        raise InputError(
            f"{csv_path} has no label column: expected image_type (or type) and/or color",
            field="labels",
        )
    bases = [csv_path.parent, root if root.is_dir() else root.parent, csv_path.parent.parent]
    truth = GroundTruth(images=[])
    seen: dict[Path, LabelledImage] = {}
    for line, row in rows:
        origin = f"{csv_path.name}:{line}"
        raw_path = (row.get(columns["path"]) or "").strip()
        if not raw_path:
            raise InputError(f"{origin}: empty path", field="labels")
        labels: dict[str, str | None] = {}
        for task, column in task_columns.items():
            value = row.get(column) or ""
            try:
                labels[task] = _parse_label(task, value)
            except ValueError as exc:
                raise InputError(f"{origin}: {exc}", field="labels") from exc
        if not any(labels.values()):
            truth.unlabelled += 1
            continue
        file = _resolve(Path(raw_path), bases)
        if file is None:
            truth.missing.append(f"{origin}: {raw_path}")
            continue
        source = (row.get(columns["source"]) or "").strip() if "source" in columns else None
        image = LabelledImage(file, origin, labels.get("image_type"), labels.get("color"), source)
        previous = seen.get(file.resolve())
        if previous is not None:
            if (previous.image_type, previous.color) != (image.image_type, image.color):
                raise InputError(
                    f"{origin}: {raw_path} is labelled differently on {previous.origin}",
                    field="labels",
                )
            continue
        seen[file.resolve()] = image
        truth.images.append(image)
    return truth


def _resolve(path: Path, bases: Sequence[Path]) -> Path | None:
    if path.is_absolute():
        return path if path.is_file() else None
    return next((base / path for base in bases if (base / path).is_file()), None)


def labels_from_folders(root: Path) -> GroundTruth:
    """Ground truth from folder names: ``<root>/.../<label>/<image>``.

    The immediate parent folder of each image is its label: a type when it names
    one (any case), else a color (any case, aliases such as ``silver``).

    Args:
        root: Folder searched recursively (or one image file).

    Raises:
        InputError: ``root`` is missing or holds no images, or a folder name is
            neither a type nor a color (the message names the image and folder).
    """
    images = []
    for file in find_images([root]):
        name = file.parent.name
        try:
            images.append(LabelledImage(file, name, image_type=normalize_image_type(name)))
            continue
        except ValueError:
            pass
        try:
            color = normalize_color(name)
        except ValueError:
            color = None
        if color is None:
            raise InputError(
                f"{file}: folder name {name!r} is neither an image type "
                f"({', '.join(IMAGE_TYPES)}) nor a color ({', '.join(COLORS)}); "
                "put each image in a folder named after its label",
                field="path",
            )
        images.append(LabelledImage(file, name, color=color))
    return GroundTruth(images)


def evaluate(
    classifier: Classifier,
    truth: GroundTruth,
    *,
    max_pixels: int,
    batch_size: int = 32,
    on_record: Callable[[], None] | None = None,
) -> Evaluation:
    """Run the classifier over the labelled images and score it.

    Args:
        classifier: The model.
        truth: Labelled images.
        max_pixels: Decompression-bomb limit for decoding.
        batch_size: Images per model call.
        on_record: Called once per image as it is classified (progress bars).

    Raises:
        InputError: ``truth`` holds no image to evaluate.
    """
    truth.require_images()
    records = []
    files = [image.file for image in truth.images]
    for record in predict_files(classifier, files, max_pixels=max_pixels, batch_size=batch_size):
        records.append(record)
        if on_record is not None:
            on_record()
    evaluation = score(truth.images, records, model_version=classifier.version)
    evaluation.missing = list(truth.missing)
    evaluation.unlabelled = truth.unlabelled
    return evaluation


def score(
    images: Sequence[LabelledImage],
    records: Iterable[dict[str, Any]],
    *,
    model_version: str = "",
) -> Evaluation:
    """Score prediction records (as :func:`predict_files` yields them) against labels.

    Args:
        images: Ground truth, in the same order as ``records``.
        records: One record per image; a record with ``error`` counts as unreadable.
        model_version: Recorded in the result.

    Returns:
        Results for each task with at least one readable labelled image.
    """
    unreadable: list[tuple[str, str]] = []
    rows: dict[str, list[tuple[int, dict[str, float], str]]] = {task: [] for task in TASKS}
    sources: dict[str, list[str]] = {task: [] for task in TASKS}
    colorless = 0
    for image, record in zip(images, records, strict=True):
        if record.get("error") or record.get("image_type") is None:
            unreadable.append((record["path"], str(record.get("error") or "unreadable")))
            continue
        for task, (vocab, scores_key) in TASKS.items():
            true = image.label(task)
            if true is not None:
                rows[task].append((vocab.index(true), record[scores_key], record["path"]))
                sources[task].append(image.source or "")
        if image.color is not None and record["image_type"] == "Placeholder":
            colorless += 1
    tasks, per_source = {}, {}
    for task, (vocab, _) in TASKS.items():
        if not rows[task]:
            continue
        tasks[task] = _score_task(task, vocab, rows[task], colorless if task == "color" else 0)
        if any(image.source is not None for image in images):
            per_source[task] = reports_by_source(*_arrays(vocab, rows[task]), sources[task], vocab)
    return Evaluation(
        model_version, len(images), [], unreadable, tasks, by_source=by_source(per_source)
    )


def _arrays(
    vocab: tuple[str, ...], rows: list[tuple[int, dict[str, float], str]]
) -> tuple[np.ndarray, np.ndarray]:
    """(N,) true indices and (N, K) scores in vocabulary order."""
    y_true = np.array([y for y, _, _ in rows], dtype=np.int64)
    return y_true, np.array([[scores[label] for label in vocab] for _, scores, _ in rows])


def _score_task(
    task: str, vocab: tuple[str, ...], rows: list[tuple[int, dict[str, float], str]], colorless: int
) -> TaskResult:
    y_true, proba = _arrays(vocab, rows)
    report = classification_report(y_true, proba, vocab)
    mistakes = []
    for (y, scores, path), p in zip(rows, proba.argmax(axis=1), strict=True):
        if p != y:
            predicted, true = vocab[int(p)], vocab[y]
            mistakes.append(
                Mistake(path, true, predicted, float(scores[predicted]), float(scores[true]))
            )
    mistakes.sort(key=lambda m: (-m.confidence, m.path))
    return TaskResult(task, report, mistakes, colorless)
