"""The bundled build on every shared source: which rows are held out, and what was used.

``cartag models build-bundled --data <root> --sources vcr,vcor,type-train``
trains on the table of :func:`cartag.training.datasets.sources.read_sources` (reviewed
labels) plus the generated placeholders. The held-out split is fixed per source:

* ``vcr``: the bundled rule of :mod:`cartag.training.datasets.dataset` on vcr's own rows
  (stratum = color folder), so its held-out photos are the shipped model's;
* ``vcor``: the same hash rule, stratum = ``vcor:<color folder>`` (the folder, not
  the reviewed color, so a relabel never moves a photo across the split);
* ``type-train``: whole repositories: fold :data:`HELD_OUT_FOLD` of
  :func:`cartag.training.datasets.sources.leave_group_out_folds` (:data:`FOLDS` folds,
  repositories sharing an image within pHash distance :data:`MAX_DISTANCE` merged);
* placeholders: the bundled rule, stratum = design family.

Pure functions over rows, so the rule is tested on a synthetic data root.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Any, Final

import numpy as np

from cartag.training.datasets.dataset import SPLIT_RULE, holdout_mask
from cartag.training.datasets.sources import TYPE_TRAIN, VCOR, VCR, SourceRow, leave_group_out_folds

ALL: Final[tuple[str, ...]] = (VCR, VCOR, TYPE_TRAIN)
FOLDS: Final[int] = 5
HELD_OUT_FOLD: Final[int] = 0
# As benchmarks/cross_source.py: type-train is mostly graphics and cut-outs on white,
# whose pHashes are alike; at 4 a logo already links to car renders.
MAX_DISTANCE: Final[int] = 2
SPLIT_RULES: Final[dict[str, str]] = {
    VCR: f"the bundled rule on vcr's rows alone: {SPLIT_RULE}",
    VCOR: "the same hash rule on vcor's rows, stratum = 'vcor:' + color folder of the path",
    TYPE_TRAIN: (
        f"whole repositories: fold {HELD_OUT_FOLD} of {FOLDS} leave-group-out folds "
        "(cartag.training.datasets.sources.leave_group_out_folds; repositories sharing an image "
        f"within pHash distance {MAX_DISTANCE} merged; largest group first into the "
        "emptiest fold)"
    ),
    "placeholder": "the bundled rule, stratum = design family",
}


def parse_sources(text: str) -> list[str]:
    """``"vcr,vcor"`` -> ``["vcr", "vcor"]`` (in :data:`ALL` order).

    Raises:
        ValueError: An unknown or no source.
    """
    names = {t.strip() for t in text.split(",") if t.strip()}
    unknown = sorted(names - set(ALL))
    if unknown or not names:
        raise ValueError(f"--sources: {', '.join(unknown) or '(none)'}; choose from {ALL}")
    return [s for s in ALL if s in names]


def folder(path: str) -> str:
    """The color folder of a data-root path (``vcor-train/Red/x.jpg`` -> ``Red``)."""
    parts = path.split("/")
    return parts[1] if len(parts) > 2 else ""


def type_train_folds(rows: Sequence[SourceRow], hashes: Sequence[str]) -> np.ndarray:
    """Leave-group-out fold per row (-1 outside type-train).

    Args:
        rows: The table.
        hashes: pHash per row (only type-train rows' are read).
    """
    typed = [i for i, r in enumerate(rows) if r.source == TYPE_TRAIN]
    fold = np.full(len(rows), -1, dtype=np.int64)
    if typed:
        fold[typed] = leave_group_out_folds(
            [rows[i].group for i in typed], [hashes[i] for i in typed], FOLDS, MAX_DISTANCE
        )
    return fold


def source_holdout(rows: Sequence[SourceRow], fold: np.ndarray) -> np.ndarray:
    """The per-source held-out rule (module docstring).

    Args:
        rows: The table (sources ``vcr``, ``vcor``, ``type-train``).
        fold: :func:`type_train_folds` of the rows.

    Returns:
        bool (N,): True for held-out rows.
    """
    held = np.zeros(len(rows), dtype=bool)
    for source, prefix in ((VCR, ""), (VCOR, f"{VCOR}:")):
        mine = [i for i, r in enumerate(rows) if r.source == source]
        if mine:
            held[mine] = holdout_mask(
                [rows[i].path for i in mine], [prefix + folder(rows[i].path) for i in mine]
            )
    typed = np.asarray([r.source == TYPE_TRAIN for r in rows], dtype=bool)
    held[typed] = fold[typed] == HELD_OUT_FOLD
    return held


def counts(
    sources: Sequence[str],
    holdout: np.ndarray,
    y: np.ndarray,
    labels: Sequence[str],
) -> dict[str, dict[str, dict[str, int]]]:
    """Rows with a label per source, split and class (classes in ``labels`` order).

    Returns:
        source -> ``train`` / ``held_out`` -> class -> count.
    """
    out: dict[str, dict[str, dict[str, int]]] = {}
    for source in dict.fromkeys(sources):
        mine = (np.asarray(sources) == source) & (y >= 0)
        out[source] = {}
        for name, part in (("train", mine & ~holdout), ("held_out", mine & holdout)):
            n = Counter(y[part].tolist())
            out[source][name] = {labels[k]: n[k] for k in range(len(labels)) if n[k]}
    return out


def placeholder_precision(
    y: np.ndarray, pred: np.ndarray, placeholder: int, real: np.ndarray
) -> dict[str, Any]:
    """Placeholder precision where every real image called Placeholder is a false positive.

    Args:
        y: (T,) true types (-1 = none).
        pred: (T,) predicted types.
        placeholder: The Placeholder index.
        real: bool (T,) real images (not generated).

    Returns:
        ``tp``, ``false_positives`` (real images not labelled Placeholder but called
        it), ``precision`` (None without a Placeholder call) and ``recall`` (None
        without a true Placeholder).
    """
    called, true = pred == placeholder, y == placeholder
    tp = int((called & true).sum())
    fp = int((called & ~true & real).sum())
    return {
        "tp": tp,
        "false_positives": fp,
        "precision": round(tp / (tp + fp), 4) if tp + fp else None,
        "recall": round(tp / int(true.sum()), 4) if true.any() else None,
    }
