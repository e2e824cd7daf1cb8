"""Classification metrics as plain JSON-ready dicts (they go into head metadata and the card)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np


def confusion(y_true: np.ndarray, y_pred: np.ndarray, n_classes: int) -> np.ndarray:
    """Confusion counts.

    Args:
        y_true: (N,) int labels.
        y_pred: (N,) int predictions.
        n_classes: K.

    Returns:
        int64 (K, K); row = true class, column = predicted class.
    """
    matrix = np.zeros((n_classes, n_classes), dtype=np.int64)
    np.add.at(matrix, (y_true, y_pred), 1)
    return matrix


def classification_report(
    y_true: np.ndarray, proba: np.ndarray, labels: Sequence[str]
) -> dict[str, Any]:
    """Accuracy, macro recall, per-class precision/recall/support, confusion matrix.

    Classes without true examples are left out of the macro average (their
    precision still counts false positives into them).

    Args:
        y_true: (N,) int labels.
        proba: (N, K) scores.
        labels: K class names.
    """
    k = len(labels)
    y_pred = proba.argmax(axis=1)
    matrix = confusion(y_true, y_pred, k)
    per_class: dict[str, dict[str, float | int | None]] = {}
    recalls = []
    for c, label in enumerate(labels):
        support = int(matrix[c].sum())
        predicted = int(matrix[:, c].sum())
        if support == 0 and predicted == 0:
            continue
        recall = matrix[c, c] / support if support else None
        precision = matrix[c, c] / predicted if predicted else None
        per_class[label] = {
            "precision": None if precision is None else round(float(precision), 4),
            "recall": None if recall is None else round(float(recall), 4),
            "support": support,
        }
        if recall is not None:
            recalls.append(float(recall))
    top2 = np.argsort(-proba, axis=1)[:, :2]
    present = [c for c in range(k) if matrix[c].sum() or matrix[:, c].sum()]
    return {
        "n": int(len(y_true)),
        "accuracy": round(float((y_pred == y_true).mean()), 4),
        "top2_accuracy": round(float((top2 == y_true[:, None]).any(axis=1).mean()), 4),
        "macro_recall": round(float(np.mean(recalls)), 4),
        "per_class": per_class,
        "confusion": {
            "labels": [labels[c] for c in present],
            "rows_true_cols_pred": matrix[np.ix_(present, present)].tolist(),
        },
    }
