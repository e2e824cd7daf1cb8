"""Confidence calibration: temperature scaling and expected calibration error.

The temperature is fitted on out-of-fold logits of the training split (never on
held-out data) and stored in the head's metadata, where
:meth:`cartag.models.heads.LinearHead.predict_proba` applies it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from cartag.models.heads import softmax

_GOLDEN = (np.sqrt(5.0) - 1.0) / 2.0


def nll(logits: np.ndarray, y: np.ndarray, temperature: float) -> float:
    """Mean negative log-likelihood of ``softmax(logits / temperature)``.

    Args:
        logits: (N, K).
        y: (N,) int labels.
        temperature: T > 0.
    """
    z = np.asarray(logits, dtype=np.float64) / temperature
    z = z - z.max(axis=1, keepdims=True)
    log_norm = np.log(np.exp(z).sum(axis=1))
    return float(np.mean(log_norm - z[np.arange(len(y)), y]))


def fit_temperature(
    logits: np.ndarray,
    y: np.ndarray,
    *,
    bounds: tuple[float, float] = (0.05, 20.0),
    iterations: int = 80,
) -> float:
    """Temperature minimising the NLL of ``softmax(logits / T)``.

    The NLL is convex in ``1 / T``, so a golden-section search on ``log T`` finds
    the optimum without gradients or randomness.

    Args:
        logits: (N, K) held-out-style logits (e.g. out-of-fold), temperature 1.
        y: (N,) int labels.
        bounds: Search interval for T.
        iterations: Golden-section steps (each shrinks the interval by 0.618).

    Returns:
        T, rounded to 4 decimals so the stored value is stable across platforms.
    """
    if len(y) == 0:
        raise ValueError("cannot fit a temperature on no examples")
    lo, hi = np.log(bounds[0]), np.log(bounds[1])
    a, b = hi - _GOLDEN * (hi - lo), lo + _GOLDEN * (hi - lo)
    fa, fb = nll(logits, y, float(np.exp(a))), nll(logits, y, float(np.exp(b)))
    for _ in range(iterations):
        if fa < fb:
            hi, b, fb = b, a, fa
            a = hi - _GOLDEN * (hi - lo)
            fa = nll(logits, y, float(np.exp(a)))
        else:
            lo, a, fa = a, b, fb
            b = lo + _GOLDEN * (hi - lo)
            fb = nll(logits, y, float(np.exp(b)))
    return round(float(np.exp((lo + hi) / 2)), 4)


def expected_calibration_error(proba: np.ndarray, y: np.ndarray, n_bins: int = 15) -> float:
    """Top-label ECE with equal-width confidence bins.

    ``sum_b (n_b / N) * |accuracy_b - mean confidence_b|`` over bins of the
    top probability.

    Args:
        proba: (N, K) probabilities.
        y: (N,) int labels.
        n_bins: Number of bins on [0, 1].
    """
    if len(y) == 0:
        return 0.0
    confidence = proba.max(axis=1)
    correct = (proba.argmax(axis=1) == y).astype(np.float64)
    # Bin b holds confidences in (b / n_bins, (b + 1) / n_bins].
    bins = np.clip(np.ceil(confidence * n_bins).astype(np.int64) - 1, 0, n_bins - 1)
    total = 0.0
    for b in range(n_bins):
        members = bins == b
        if members.any():
            gap = abs(correct[members].mean() - confidence[members].mean())
            total += members.mean() * gap
    return float(total)


def calibrated_proba(logits: np.ndarray, temperature: float) -> np.ndarray:
    """``softmax(logits / temperature)``: (N, K) -> (N, K) float64."""
    return softmax(np.asarray(logits, dtype=np.float64) / temperature)


def confidence_table(
    proba: np.ndarray, y: np.ndarray, thresholds: Sequence[float]
) -> list[dict[str, Any]]:
    """How a low-confidence cut-off would split predictions.

    Args:
        proba: (N, K) probabilities.
        y: (N,) int labels.
        thresholds: Candidate cut-offs; a prediction is low-confidence when its
            top probability is below the cut-off.

    Returns:
        Per threshold: share flagged, accuracy of the kept and of the flagged
        predictions (None when a side is empty), and errors caught.
    """
    confidence = proba.max(axis=1)
    correct = proba.argmax(axis=1) == y
    rows = []
    for t in thresholds:
        low = confidence < t
        rows.append(
            {
                "threshold": t,
                "share_low": round(float(low.mean()), 4) if len(y) else 0.0,
                "accuracy_confident": round(float(correct[~low].mean()), 4)
                if (~low).any()
                else None,
                "accuracy_low": round(float(correct[low].mean()), 4) if low.any() else None,
                "errors_flagged": int((low & ~correct).sum()),
                "errors_total": int((~correct).sum()),
            }
        )
    return rows
