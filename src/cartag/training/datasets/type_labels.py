"""The reviewed image-type labels of vcr-train: ``type_labels.csv`` (next to this module).

The vcr-train weak rule, corrected and completed by review with the tools of
:mod:`cartag.training.fitting.cleaning` (columns ``path,weak_type,type,source,note``;
``source`` is ``weak_rule``, ``reviewed`` or ``model_confident``). Read by the type
head (:mod:`cartag.training.heads.type_head`), the all-sources table
(:mod:`cartag.training.datasets.sources`) and the fine-tuning.
"""

from __future__ import annotations

import csv
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from cartag.vocab import IMAGE_TYPES

TYPE_LABELS_PATH: Final[Path] = Path(__file__).resolve().parent / "type_labels.csv"
LABEL_SOURCES: Final[tuple[str, ...]] = ("weak_rule", "reviewed", "model_confident")


@dataclass(frozen=True)
class TypeLabel:
    """One row of ``type_labels.csv``.

    Attributes:
        path: labels.csv path (``vcr-train/<Color>/<file>.jpg``).
        weak_type: The weak rule's answer, None where it abstained.
        type: The label used for training and evaluation.
        source: ``weak_rule`` (kept), ``reviewed`` (a person looked) or
            ``model_confident`` (filled by a confident out-of-fold prediction).
        note: Free text (why, or the prediction's probability).
    """

    path: str
    weak_type: str | None
    type: str
    source: str
    note: str


def read_type_labels(path: Path = TYPE_LABELS_PATH) -> dict[str, TypeLabel]:
    """Read and check ``type_labels.csv``.

    Raises:
        ValueError: A row has an unknown type or source, or a path repeats.
    """
    labels: dict[str, TypeLabel] = {}
    with path.open(newline="", encoding="utf-8") as fh:
        for n, row in enumerate(csv.DictReader(fh), start=2):
            label = TypeLabel(
                row["path"], row["weak_type"] or None, row["type"], row["source"], row["note"]
            )
            if label.type not in IMAGE_TYPES or label.source not in LABEL_SOURCES:
                raise ValueError(f"{path}:{n}: bad type {label.type!r} or source {label.source!r}")
            if label.path in labels:
                raise ValueError(f"{path}:{n}: {label.path} appears twice")
            labels[label.path] = label
    return labels


def cleaning_counts(labels: Mapping[str, TypeLabel]) -> dict[str, Any]:
    """Kept / corrected / filled counts of a cleaned label set.

    Returns:
        ``kept`` (weak label confirmed or left), ``corrected`` (reviewed and
        changed, with ``corrections`` by ``"weak->new"``), ``filled_reviewed`` and
        ``filled_model`` (rows the weak rule left empty), ``reviewed`` (all rows
        a person looked at) and ``n``.
    """
    values = list(labels.values())
    corrected = [v for v in values if v.weak_type and v.type != v.weak_type]
    filled = [v for v in values if not v.weak_type]
    kinds = Counter(f"{v.weak_type}->{v.type}" for v in corrected)
    return {
        "n": len(values),
        "kept": sum(1 for v in values if v.weak_type and v.type == v.weak_type),
        "corrected": len(corrected),
        "corrections": dict(sorted(kinds.items())),
        "filled_reviewed": sum(1 for v in filled if v.source == "reviewed"),
        "filled_model": sum(1 for v in filled if v.source == "model_confident"),
        "reviewed": sum(1 for v in values if v.source == "reviewed"),
    }
