"""Fitting :class:`~cartag.models.heads.LinearHead` on cached embeddings.

The problems are small (thousands x 1280), so a full-batch L-BFGS in float64
converges in seconds and is deterministic: same data, same head.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np
import torch

from cartag.models.heads import LinearHead

# Classes with no training example get a bias this far (in nats) below the
# smallest winning logit seen in training, i.e. probability < ~1e-4 on data like
# the training set, instead of a bias that drifts towards -inf under L-BFGS.
_ABSENT_MARGIN = float(np.log(1e4))


def class_weights(y: np.ndarray, n_classes: int) -> np.ndarray:
    """Per-sample weights for ``class_weight="balanced"`` (sklearn's rule).

    Args:
        y: (N,) int class indices.
        n_classes: K.

    Returns:
        float64 (N,) weights ``N / (K_present * count[y_i])``.
    """
    counts = np.bincount(y, minlength=n_classes).astype(np.float64)
    present = int((counts > 0).sum())
    per_class = np.divide(len(y), present * counts, out=np.zeros_like(counts), where=counts > 0)
    return per_class[y]  # type: ignore[no-any-return]


def fit_linear_head(
    X: np.ndarray,
    y: np.ndarray,
    labels: Sequence[str],
    *,
    l2: float = 1e-2,
    epochs: int = 300,
    class_weight: Literal["balanced"] | None = "balanced",
    seed: int = 0,
) -> LinearHead:
    """Fit a multinomial logistic regression with full-batch L-BFGS.

    Loss = weighted mean cross-entropy + ``l2 / 2 * ||W||^2`` (bias not
    penalised) on features standardised with the training mean/std.

    Args:
        X: (N, D) embeddings.
        y: (N,) int indices into ``labels``. Labels without examples are kept
            in the head with a zero weight column and a bias low enough that
            they score ~0 (they exist so score vectors always cover the vocabulary).
        labels: K class names.
        l2: L2 penalty on the weights (features are standardised, so it is scale-free).
        epochs: Maximum L-BFGS iterations.
        class_weight: ``"balanced"`` weights each class equally in the loss; None
            weights every sample equally.
        seed: Torch seed (L-BFGS from zeros is deterministic anyway; kept for
            future stochastic variants).

    Returns:
        The fitted head; ``metadata`` holds the fit parameters and class counts.
    """
    y = np.asarray(y, dtype=np.int64)
    if X.ndim != 2 or y.shape != (X.shape[0],):
        raise ValueError(f"X must be (N, D) and y (N,); got {X.shape} and {y.shape}")
    k = len(labels)
    if y.size == 0 or y.min() < 0 or y.max() >= k:
        raise ValueError(f"y must hold indices in [0, {k}) and be non-empty")
    torch.manual_seed(seed)

    mean = X.mean(axis=0)
    std = X.std(axis=0)
    # Constant features (std 0) carry no information; dividing by 1 keeps them at 0.
    std = np.where(std < 1e-6, 1.0, std)
    z = (X - mean) / std

    counts = np.bincount(y, minlength=k)
    present = np.flatnonzero(counts > 0)
    remap = np.full(k, -1, dtype=np.int64)
    remap[present] = np.arange(len(present))
    weights = class_weights(y, k) if class_weight == "balanced" else np.ones(len(y))

    xt = torch.from_numpy(z.astype(np.float64))
    yt = torch.from_numpy(remap[y])
    wt = torch.from_numpy(weights.astype(np.float64))
    wt = wt / wt.sum()
    w_param = torch.zeros((X.shape[1], len(present)), dtype=torch.float64, requires_grad=True)
    b_param = torch.zeros(len(present), dtype=torch.float64, requires_grad=True)
    optimizer = torch.optim.LBFGS(
        [w_param, b_param],
        lr=1.0,
        max_iter=epochs,
        history_size=20,
        tolerance_grad=1e-8,
        tolerance_change=1e-12,
        line_search_fn="strong_wolfe",
    )

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        logits = xt @ w_param + b_param
        ce = torch.nn.functional.cross_entropy(logits, yt, reduction="none")
        loss = (ce * wt).sum() + 0.5 * l2 * (w_param * w_param).sum()
        loss.backward()  # type: ignore[no-untyped-call]
        return loss

    with torch.enable_grad():
        optimizer.step(closure)  # type: ignore[no-untyped-call]
        final_loss = float(closure().item())

    w_fit = w_param.detach().numpy()
    b_fit = b_param.detach().numpy()
    weight = np.zeros((X.shape[1], k), dtype=np.float64)
    bias = np.zeros(k, dtype=np.float64)
    weight[:, present] = w_fit
    bias[present] = b_fit
    absent = np.flatnonzero(counts == 0)
    if len(absent):
        winning = (z @ w_fit + b_fit).max(axis=1).min()
        bias[absent] = winning - _ABSENT_MARGIN

    return LinearHead(
        labels,
        weight,
        bias,
        mean,
        std,
        metadata={
            "fit": {
                "method": "multinomial logistic regression, full-batch L-BFGS (float64)",
                "l2": l2,
                "max_iter": epochs,
                "class_weight": class_weight,
                "seed": seed,
                "final_loss": round(final_loss, 6),
            },
            "n_train": int(len(y)),
            "train_counts": {labels[i]: int(counts[i]) for i in range(k)},
            "absent_labels": [labels[int(i)] for i in absent],
        },
    )


def select_l2(
    X: np.ndarray,
    y: np.ndarray,
    labels: Sequence[str],
    grid: Sequence[float],
    *,
    folds: int = 4,
    epochs: int = 300,
) -> tuple[float, dict[str, float]]:
    """Pick ``l2`` by k-fold cross-validated balanced accuracy on the training data.

    Folds are ``index % folds`` of the rows as given, so callers should pass rows
    in a deterministic, label-independent order (e.g. sorted by a path hash).

    Args:
        X: (N, D) embeddings.
        y: (N,) int labels.
        labels: K class names.
        grid: Candidate penalties.
        folds: Number of folds.
        epochs: L-BFGS iterations per fit.

    Returns:
        The best penalty (ties go to the larger, i.e. simpler, one) and the score per penalty.
    """
    fold_of = np.arange(len(y)) % folds
    scores: dict[str, float] = {}
    best_l2, best_score = max(grid), -1.0
    for l2 in sorted(grid, reverse=True):
        recalls = []
        for fold in range(folds):
            train, test = fold_of != fold, fold_of == fold
            head = fit_linear_head(X[train], y[train], labels, l2=l2, epochs=epochs)
            pred = head.predict_proba(X[test]).argmax(axis=1)
            recalls.append(balanced_accuracy(y[test], pred))
        score = float(np.mean(recalls))
        scores[repr(l2)] = round(score, 4)
        if score > best_score + 1e-9:
            best_l2, best_score = l2, score
    return best_l2, scores


def balanced_accuracy(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Mean per-class recall over the classes present in ``y_true``.

    Args:
        y_true: (N,) int labels.
        y_pred: (N,) int predictions.
    """
    recalls = [float((y_pred[y_true == c] == c).mean()) for c in np.unique(y_true)]
    return float(np.mean(recalls)) if recalls else 0.0
