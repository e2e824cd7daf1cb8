"""The cross-source protocol: which rows train and test each head, and how results are scored.

Pure functions over a table of rows (source, labels, folds), so the protocol is
tested on synthetic data and ``benchmarks/cross_source.py`` only embeds, fits and
prints. Rows are the labelled table of :mod:`cartag.training.datasets.sources` followed by
the generated placeholders (source :data:`PLACEHOLDER`); a label of -1 means
"none for this task".

Protocols (each a :class:`Split`, or several pooled into one result):

* color ``vcr -> vcor`` and ``vcor -> vcr``: one whole source trains, the other
  tests. vcr is tested on its held-out 20% only (:func:`holdout_by_source`: the
  bundled split), because the shipped backbone was fine-tuned on the rest.
* color ``both 80/20``: a random split of both (per source and color), for reference.
* type ``vcr -> type-train``: vcr + placeholders train, all of type-train tests.
* type ``leave-repo-out``: type-train in k folds of whole (merged) repositories;
  each fold is tested by a head trained on vcr + placeholders + the other folds,
  and the out-of-fold predictions are pooled (:func:`pool`) into one result.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final

import numpy as np

from cartag.training.datasets.all_sources import placeholder_precision
from cartag.training.datasets.dataset import holdout_mask
from cartag.training.datasets.sources import TYPE_TRAIN, VCOR, VCR
from cartag.training.evaluation.by_source import reports_by_source
from cartag.training.fitting.metrics import classification_report
from cartag.vocab import COLORS, IMAGE_TYPES

PLACEHOLDER: Final[str] = "placeholder"
# Classes with fewer test images than this are reported but flagged: one
# mistake moves their recall by more than 3 points.
MIN_SUPPORT: Final[int] = 30
# Test counts below this are listed as "few": recall moves 2+ points per image.
FEW: Final[int] = 50
# The targets, on cross-source held-out figures.
TARGETS: Final[dict[str, float]] = {
    "type_macro_recall": 0.96,
    "placeholder_precision": 0.995,
    "color_accuracy": 0.94,
    "color_min_recall": 0.80,
}


@dataclass(frozen=True)
class Split:
    """Rows that train a head and rows that test it.

    Attributes:
        name: The protocol (``color: vcr -> vcor``).
        task: ``image_type`` or ``color``.
        train: int64 (M,) training row indices.
        test: int64 (T,) test row indices.
    """

    name: str
    task: str
    train: np.ndarray
    test: np.ndarray


def _rows(mask: np.ndarray) -> np.ndarray:
    return np.flatnonzero(mask).astype(np.int64)


def holdout_by_source(keys: Sequence[str], sources: Sequence[str], y: np.ndarray) -> np.ndarray:
    """The bundled split rule, stratified by source and label.

    vcr rows use the color as the stratum, exactly as :mod:`cartag.training.bundled.build`
    does (so vcr's held-out rows are the shipped model's held-out rows); other
    sources use ``source:label``, so they never change vcr's assignment.

    Args:
        keys: N stable keys (labels.csv paths).
        sources: N source names.
        y: (N,) label index per row (-1: none).

    Returns:
        bool (N,): True for held-out rows.
    """
    strata = [str(c) if s == VCR else f"{s}:{c}" for s, c in zip(sources, y.tolist(), strict=True)]
    return holdout_mask(keys, strata)


def color_splits(sources: Sequence[str], y: np.ndarray, holdout: np.ndarray) -> list[Split]:
    """The three color protocols (module docstring).

    Args:
        sources: N source names.
        y: (N,) color index per row (-1: none).
        holdout: bool (N,) from :func:`holdout_by_source`.
    """
    src = np.asarray(sources)
    vcr, vcor = (src == VCR) & (y >= 0), (src == VCOR) & (y >= 0)
    return [
        Split("color: vcr -> vcor", "color", _rows(vcr), _rows(vcor)),
        Split("color: vcor -> vcr held-out", "color", _rows(vcor), _rows(vcr & holdout)),
        Split(
            "color: both 80/20",
            "color",
            _rows((vcr | vcor) & ~holdout),
            _rows((vcr | vcor) & holdout),
        ),
    ]


def type_splits(
    sources: Sequence[str],
    y: np.ndarray,
    fold: np.ndarray,
    base: np.ndarray | None = None,
    base_name: str = VCR,
) -> list[Split]:
    """``vcr -> type-train`` and one split per leave-repo-out fold.

    Args:
        sources: N source names (placeholders: :data:`PLACEHOLDER`).
        y: (N,) type index per row (-1: none).
        fold: (N,) type-train fold per row (-1 for other sources).
        base: bool (N,) the rows outside type-train that train every split; None =
            every vcr and placeholder row (the bundled recipe of vcr-train alone).
        base_name: Names those rows in the first split's name.

    Returns:
        The cross-source split, then the folds in order (names end in ``fold k``).
    """
    src = np.asarray(sources)
    if base is None:
        base = np.isin(src, [VCR, PLACEHOLDER])
    base = base & (src != TYPE_TRAIN) & (y >= 0)
    typed = (src == TYPE_TRAIN) & (y >= 0)
    splits = [Split(f"type: {base_name} -> {TYPE_TRAIN}", "image_type", _rows(base), _rows(typed))]
    for k in sorted(set(fold[typed].tolist())):
        splits.append(
            Split(
                f"type: leave-repo-out fold {k}",
                "image_type",
                _rows(base | (typed & (fold != k))),
                _rows(typed & (fold == k)),
            )
        )
    return splits


def pool(parts: Sequence[tuple[np.ndarray, np.ndarray]]) -> tuple[np.ndarray, np.ndarray]:
    """Pool out-of-fold predictions into one set.

    Args:
        parts: Per fold, (T_k,) test rows and (T_k, K) scores.

    Returns:
        Rows sorted, and their (T, K) scores.

    Raises:
        ValueError: A row is predicted by two folds.
    """
    rows = np.concatenate([r for r, _ in parts])
    proba = np.concatenate([p for _, p in parts])
    if len(np.unique(rows)) != len(rows):
        raise ValueError("folds overlap: a row was tested twice")
    order = np.argsort(rows, kind="stable")
    return rows[order], proba[order]


def placeholder_stats(
    y: np.ndarray, pred: np.ndarray, placeholder: int, real: np.ndarray | None = None
) -> dict[str, Any]:
    """Placeholder precision and recall, and real photos wrongly called Placeholder.

    Args:
        y: (T,) true type of the labelled test rows.
        pred: (T,) predicted type of those rows.
        placeholder: The Placeholder index.
        real: (R,) predicted types of unlabelled rows known to be real photos
            (vcor), which count as false positives too; None = none.

    Returns:
        ``precision`` and ``recall`` on the labelled rows (None without a
        prediction / a true one), ``false_positives``, and with ``real`` also
        ``real_called_placeholder`` and ``precision_with_real``.
    """
    # Every labelled row counts as real: any wrong Placeholder call is a false positive.
    core = placeholder_precision(y, pred, placeholder, np.ones(len(y), dtype=bool))
    tp, fp = core["tp"], core["false_positives"]
    out: dict[str, Any] = {
        "precision": core["precision"],
        "recall": core["recall"],
        "false_positives": fp,
    }
    if real is not None:
        extra = int((real == placeholder).sum())
        out["n_real"] = int(len(real))
        out["real_called_placeholder"] = extra
        out["precision_with_real"] = round(tp / (tp + fp + extra), 4) if tp + fp + extra else None
    return out


def coverage(
    y_train: np.ndarray, y_test: np.ndarray, labels: Sequence[str], made: Sequence[str] = ()
) -> dict[str, Any]:
    """Which classes a protocol can and cannot measure.

    Args:
        y_train: Training labels (real rows).
        y_test: Test labels.
        labels: Class names.
        made: Classes that training got only as generated images (recolored).

    Returns:
        ``untestable`` (no test image), ``low_support`` (class -> count below
        :data:`FEW`), ``untrained`` (no training image, real or made: the
        head cannot answer them) and ``synthetic_only`` (``made``).
    """
    train_n = np.bincount(y_train, minlength=len(labels))
    test_n = np.bincount(y_test, minlength=len(labels))
    return {
        "untestable": [c for i, c in enumerate(labels) if test_n[i] == 0],
        "low_support": {c: int(test_n[i]) for i, c in enumerate(labels) if 0 < test_n[i] < FEW},
        "untrained": [c for i, c in enumerate(labels) if train_n[i] == 0 and c not in made],
        "synthetic_only": list(made),
    }


def score(
    y: np.ndarray, proba: np.ndarray, sources: Sequence[str], labels: Sequence[str]
) -> dict[str, Any]:
    """Overall and per-source classification reports of one protocol's test rows.

    Args:
        y: (T,) true labels.
        proba: (T, K) scores.
        sources: T source names.
        labels: K class names.
    """
    return {
        "overall": classification_report(y, proba, labels),
        "by_source": reports_by_source(y, proba, sources, labels),
    }


def type_result(
    name: str, y: np.ndarray, proba: np.ndarray, sources: Sequence[str], real: np.ndarray
) -> dict[str, Any]:
    """A type protocol's result: reports, Placeholder figures and the targets.

    Args:
        name: The protocol.
        y: (T,) true types of the test rows.
        proba: (T, K) predicted type scores.
        sources: T source names.
        real: (R,) predicted types of real photos without type labels (vcor): any
            Placeholder among them is a false positive.

    Returns:
        ``name``, ``task``, :func:`score`'s keys, ``placeholder`` and ``targets``,
        judged on Placeholder precision with ``real`` counted.
    """
    scored = score(y, proba, sources, IMAGE_TYPES)
    placeholder = IMAGE_TYPES.index("Placeholder")
    ph = placeholder_stats(y, proba.argmax(axis=1), placeholder, real)
    return {
        "name": name,
        "task": "image_type",
        **scored,
        "placeholder": ph,
        "targets": check_targets("image_type", scored["overall"], ph["precision_with_real"]),
    }


def check_targets(
    task: str, report: dict[str, Any], precision: float | None = None
) -> dict[str, Any]:
    """The issue's targets for one report: each check's value and whether all are met.

    Color recall is checked on every class with at least :data:`MIN_SUPPORT` images.
    """
    checks: dict[str, tuple[float | None, float]] = {}
    if task == "image_type":
        checks["type_macro_recall"] = (report["macro_recall"], TARGETS["type_macro_recall"])
        checks["placeholder_precision"] = (precision, TARGETS["placeholder_precision"])
    else:
        recalls = [
            row["recall"]
            for row in report["per_class"].values()
            if row["recall"] is not None and row["support"] >= MIN_SUPPORT
        ]
        checks["color_accuracy"] = (report["accuracy"], TARGETS["color_accuracy"])
        checks["color_min_recall"] = (min(recalls, default=None), TARGETS["color_min_recall"])
    result = {
        name: {"value": v, "target": t, "met": v is not None and v >= t}
        for name, (v, t) in checks.items()
    }
    return {"checks": result, "met": all(c["met"] for c in result.values())}


def _f(value: float | None) -> str:
    return "—" if value is None else f"{value:.3f}"


def _lowest(report: dict[str, Any]) -> str:
    rows = [(r["recall"], c) for c, r in report["per_class"].items() if r["recall"] is not None]
    recall, label = min(rows)
    return f"{label} {recall:.3f}"


def summary_rows(results: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per protocol and test set (``all`` added for pooled test sets).

    The Placeholder figures and the targets belong to the unseen source: for the
    shipped model only type-train and vcor are judged.

    Returns:
        Dicts with ``protocol``, ``test_set``, ``n``, ``accuracy``, ``macro_recall``,
        ``lowest`` (class and recall), ``placeholder`` (stats or None) and
        ``targets`` (``met``, ``not met`` or ``""``).
    """
    rows = []
    for r in results:
        tests = dict(r["by_source"])
        if len(tests) > 1 and not r["name"].startswith("shipped"):
            tests["all"] = r["overall"]
        for test, rep in tests.items():
            judged = test in (TYPE_TRAIN, VCOR) if r["name"].startswith("shipped") else True
            met = ("met" if r["targets"]["met"] else "not met") if judged else ""
            rows.append(
                {
                    "protocol": r["name"],
                    "test_set": test,
                    "n": rep["n"],
                    "accuracy": rep["accuracy"],
                    "macro_recall": rep["macro_recall"],
                    "lowest": _lowest(rep),
                    "placeholder": r.get("placeholder") if judged else None,
                    "targets": met,
                }
            )
    return rows


def markdown(results: Sequence[dict[str, Any]]) -> str:
    """Summary, per-class recall and confusion matrices of protocol results as markdown.

    Args:
        results: Dicts with ``name`` (``shipped...`` = scored per source as is),
            ``task``, ``overall``, ``by_source`` (see :func:`score`), ``targets``
            (:func:`check_targets`), for type ``placeholder`` (:func:`placeholder_stats`)
            and optionally ``coverage`` (test set -> :func:`coverage`).
    """
    lines = [
        "| protocol | test set | n | accuracy | macro recall | lowest recall | "
        "Placeholder precision (+vcor photos) | targets |",
        "|---|---|---:|---:|---:|---|---|---|",
    ]
    for row in summary_rows(results):
        ph = row["placeholder"]
        precision = (
            f"{_f(ph['precision'])} ({_f(ph['precision_with_real'])}: "
            f"{ph['real_called_placeholder']} of {ph['n_real']} {ph.get('real_name', 'vcor')})"
            if ph
            else ""
        )
        lines.append(
            f"| {row['protocol']} | {row['test_set']} | {row['n']} | {_f(row['accuracy'])} | "
            f"{_f(row['macro_recall'])} | {row['lowest']} | {precision} | {row['targets']} |"
        )
    for task, vocab in (("image_type", IMAGE_TYPES), ("color", COLORS)):
        lines += ["", f"**{task}: recall per class** (— = no test image)", ""]
        lines.append("| protocol | test set | " + " | ".join(vocab) + " |")
        lines.append("|---|---|" + "---:|" * len(vocab))
        for r in results:
            if r["task"] != task:
                continue
            for test, rep in r["by_source"].items():
                recalls = [rep["per_class"].get(c, {}).get("recall") for c in vocab]
                lines.append(
                    f"| {r['name']} | {test} | " + " | ".join(_f(v) for v in recalls) + " |"
                )
    covered = [r for r in results if "coverage" in r]
    if covered:
        lines += ["", "**What each protocol cannot measure** (per test set)", ""]
        lines.append(
            f"| protocol | test set | no test image | < {FEW} test images | not trained | "
            "trained on recolored photos only |"
        )
        lines.append("|---|---|---|---|---|---|")
        for r in covered:
            for test, c in r["coverage"].items():
                low = ", ".join(f"{k} ({v})" for k, v in c["low_support"].items())
                lines.append(
                    f"| {r['name']} | {test} | {', '.join(c['untestable'])} | {low} | "
                    f"{', '.join(c['untrained'])} | {', '.join(c['synthetic_only'])} |"
                )
    lines += ["", "**Confusion matrices** (rows true, columns predicted)"]
    for r in results:
        for test, rep in r["by_source"].items():
            lines += confusion_markdown(f"{r['name']} · {test}", rep)
    return "\n".join(lines)


def confusion_markdown(title: str, report: dict[str, Any]) -> list[str]:
    """A report's confusion matrix as markdown lines (rows true, columns predicted)."""
    names = report["confusion"]["labels"]
    lines = ["", title, "", "| true \\ pred | " + " | ".join(names) + " |"]
    lines.append("|---|" + "---:|" * len(names))
    for label, counts in zip(names, report["confusion"]["rows_true_cols_pred"], strict=True):
        lines.append(f"| {label} | " + " | ".join(str(c) if c else "." for c in counts) + " |")
    return lines
