"""Train the color head: linear on [embedding, color features] + a small MLP on the color features.

The head is an :class:`~cartag.models.heads.MLPHead` whose input is the backbone
embedding (D) followed by :func:`~cartag.models.color_features.color_features`
(F). Its logits are the sum of

* a multinomial logistic regression on all D + F standardised inputs
  (:func:`~cartag.training.fitting.fit.fit_linear_head`, l2 chosen by 4-fold CV), and
* one-hidden-layer ReLU MLPs on the F color features only, trained with AdamW,
  dropout and balanced class weights; a few seeds are averaged (stored as one
  wider hidden layer) and the epoch count is chosen by 4-fold CV of the sum.

Everything is chosen by cross-validation on the training split; the held-out
split (:mod:`cartag.training.datasets.dataset`) is only scored. The bundled model's
color head, with its recolored photos, is built in :mod:`cartag.training.bundled.color_head`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cartag.models.color_features import FEATURE_DIM, FEATURE_ID, SIZE, color_features_batch
from cartag.models.heads import LinearHead, MLPHead
from cartag.training.datasets.dataset import Sample, sample_loader
from cartag.training.datasets.embedding_cache import EmbeddingCache
from cartag.training.fitting.fit import balanced_accuracy, class_weights, fit_linear_head, select_l2
from cartag.training.fitting.metrics import classification_report

COLOR_L2_GRID = (1e-2, 3e-2, 0.1, 0.3)
# Same rule as cartag.training.fitting.fit: a label without examples scores this many
# nats below the weakest winning logit seen in training (probability < ~1e-4).
_ABSENT_MARGIN = float(np.log(1e4))


@dataclass(frozen=True)
class MLPConfig:
    """Hyper-parameters of the color-feature MLP (fixed; only ``epochs`` is tuned by CV).

    Attributes:
        hidden: Hidden units per seed.
        seeds: Independently initialised MLPs whose logits are averaged.
        epoch_grid: Candidate epoch counts, scored by CV.
        lr: AdamW learning rate.
        weight_decay: AdamW decoupled weight decay.
        input_dropout: Dropout on the standardised features.
        dropout: Dropout on the hidden layer.
        batch_size: Mini-batch size.
    """

    hidden: int = 64
    seeds: int = 3
    epoch_grid: tuple[int, ...] = (20, 40, 60, 80)
    lr: float = 1e-3
    weight_decay: float = 1e-2
    input_dropout: float = 0.1
    dropout: float = 0.2
    batch_size: int = 64


def build_color_features(samples: Sequence[Sample], cache_dir: Path) -> np.ndarray:
    """Color features of every sample, through the embedding cache.

    Args:
        samples: N labelled photos.
        cache_dir: Cache folder (keyed by file hash and feature id).

    Returns:
        float32 (N, FEATURE_DIM).
    """
    cache = EmbeddingCache.in_folder(cache_dir, FEATURE_ID, f"to-rgb-bilinear-{SIZE}")

    return cache.get_or_compute(
        [s.sha256 for s in samples], sample_loader(samples), color_features_batch
    )


def _train_mlps(
    z: np.ndarray, y: np.ndarray, n_out: int, config: MLPConfig, checkpoints: Sequence[int]
) -> list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]]:
    """Train ``config.seeds`` MLPs and snapshot their seed-concatenated weights.

    Args:
        z: float32 (N, F) standardised features.
        y: (N,) int targets in [0, n_out).
        n_out: Output units (present classes).
        config: Hyper-parameters.
        checkpoints: Sorted epoch counts at which to snapshot.

    Returns:
        Per checkpoint: W1 (F, S*H), b1 (S*H,), W2 (S*H, n_out) already divided by
        S (so the logits are the seed average), b2 (n_out,) averaged.
    """
    xt = torch.from_numpy(np.ascontiguousarray(z, dtype=np.float32))
    yt = torch.from_numpy(y.astype(np.int64))
    per_class = class_weights(y, n_out)
    weight = np.zeros(n_out, dtype=np.float32)
    weight[y] = per_class
    loss_fn = torch.nn.CrossEntropyLoss(weight=torch.from_numpy(weight))
    snaps: list[list[tuple[np.ndarray, ...]]] = [[] for _ in checkpoints]
    for seed in range(config.seeds):
        torch.manual_seed(seed)
        order = torch.Generator().manual_seed(seed)
        hidden = torch.nn.Linear(z.shape[1], config.hidden)
        out = torch.nn.Linear(config.hidden, n_out)
        net = torch.nn.Sequential(
            torch.nn.Dropout(config.input_dropout),
            hidden,
            torch.nn.ReLU(),
            torch.nn.Dropout(config.dropout),
            out,
        )
        opt = torch.optim.AdamW(net.parameters(), lr=config.lr, weight_decay=config.weight_decay)
        net.train()
        with torch.enable_grad():
            for epoch in range(1, max(checkpoints) + 1):
                perm = torch.randperm(len(y), generator=order)
                for start in range(0, len(y), config.batch_size):
                    rows = perm[start : start + config.batch_size]
                    opt.zero_grad()
                    loss = loss_fn(net(xt[rows]), yt[rows])
                    loss.backward()
                    opt.step()
                if epoch in checkpoints:
                    snaps[list(checkpoints).index(epoch)].append(
                        tuple(
                            p.detach().numpy().astype(np.float64).copy()
                            for p in (hidden.weight, hidden.bias, out.weight, out.bias)
                        )
                    )
    result = []
    for members in snaps:
        w1 = np.concatenate([m[0].T for m in members], axis=1)
        b1 = np.concatenate([m[1] for m in members])
        w2 = np.concatenate([m[2].T for m in members], axis=0) / len(members)
        b2 = np.mean([m[3] for m in members], axis=0)
        result.append((w1, b1, w2, b2))
    return result


def _combine(
    linear: LinearHead,
    mlp: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray],
    present: np.ndarray,
    mlp_start: int,
    x_train: np.ndarray,
) -> MLPHead:
    """One head from the linear part and the MLP part (present classes only)."""
    w1, b1, w2_present, b2_present = mlp
    k = len(linear.labels)
    w2 = np.zeros((w1.shape[1], k))
    w2[:, present] = w2_present
    bias = linear.bias.astype(np.float64).copy()
    bias[present] += b2_present
    head = MLPHead(
        linear.labels,
        linear.weight,
        bias,
        linear.feature_mean,
        linear.feature_std,
        w1,
        b1,
        w2,
        mlp_start=mlp_start,
        metadata=linear.metadata,
    )
    absent = np.setdiff1d(np.arange(k), present)
    if len(absent):
        # Re-place absent labels below the combined model's weakest winning logit.
        logits = head.logits(x_train)
        bias[absent] = logits[:, present].max(axis=1).min() - _ABSENT_MARGIN
        head.bias = bias.astype(np.float32)
    return head


def fit_color_head(
    X: np.ndarray,
    y: np.ndarray,
    labels: Sequence[str],
    *,
    mlp_start: int,
    l2: float,
    epochs: Sequence[int] = (60,),
    config: MLPConfig | None = None,
) -> list[MLPHead]:
    """Fit the linear part, then the MLP part, and combine them.

    Args:
        X: (N, D + F) inputs: embeddings then color features.
        y: (N,) int indices into ``labels``.
        labels: K class names.
        mlp_start: D, the first color-feature column.
        l2: Penalty of the linear part.
        epochs: MLP epoch counts to return heads for (one training run).
        config: MLP hyper-parameters (default :class:`MLPConfig`).

    Returns:
        One head per entry of ``epochs``, in that order.
    """
    config = config or MLPConfig()
    linear = fit_linear_head(X, y, labels, l2=l2)
    z = (X - linear.feature_mean) / linear.feature_std
    counts = np.bincount(y, minlength=len(labels))
    present = np.flatnonzero(counts > 0)
    remap = np.full(len(labels), -1, dtype=np.int64)
    remap[present] = np.arange(len(present))
    checkpoints = sorted(set(epochs))
    snaps = _train_mlps(z[:, mlp_start:], remap[y], len(present), config, checkpoints)
    heads = []
    for n_epochs in epochs:
        head = _combine(linear, snaps[checkpoints.index(n_epochs)], present, mlp_start, X)
        head.metadata["fit"] = {
            "method": (
                "multinomial logistic regression on [embedding, color features] (full-batch "
                f"L-BFGS, float64) + {config.seeds} averaged one-hidden-layer ReLU MLPs on the "
                "color features (AdamW), logits summed"
            ),
            "l2": l2,
            "class_weight": "balanced",
            "mlp": {**asdict(config), "epochs": n_epochs},
            "linear_final_loss": linear.metadata["fit"]["final_loss"],
        }
        heads.append(head)
    return heads


def select_color_head(
    X: np.ndarray,
    y: np.ndarray,
    labels: Sequence[str],
    *,
    mlp_start: int,
    l2: float | None = None,
    folds: int = 4,
    config: MLPConfig | None = None,
) -> tuple[float, int, dict[str, Any]]:
    """Choose l2 (linear part alone) and the MLP epoch count (whole head) by k-fold CV.

    Folds are ``row % folds``; pass rows in a label-independent order.

    Returns:
        l2, epochs, and the CV balanced accuracies behind both choices.
    """
    config = config or MLPConfig()
    cv: dict[str, Any] = {}
    if l2 is None:
        l2, cv["l2_cv_balanced_accuracy"] = select_l2(X, y, labels, COLOR_L2_GRID, folds=folds)
    fold_of = np.arange(len(y)) % folds
    scores = np.zeros((folds, len(config.epoch_grid)))
    for fold in range(folds):
        train, test = fold_of != fold, fold_of == fold
        heads = fit_color_head(
            X[train], y[train], labels, mlp_start=mlp_start, l2=l2,
            epochs=config.epoch_grid, config=config,
        )  # fmt: skip
        for j, head in enumerate(heads):
            scores[fold, j] = balanced_accuracy(y[test], head.predict_proba(X[test]).argmax(1))
    mean = scores.mean(axis=0)
    # Ties go to fewer epochs (the simpler model).
    epochs = config.epoch_grid[int(np.argmax(mean))]
    cv["epochs_cv_balanced_accuracy"] = {
        str(e): round(float(s), 4) for e, s in zip(config.epoch_grid, mean, strict=True)
    }
    return l2, epochs, cv


def train_color_head(
    X: np.ndarray,
    y: np.ndarray,
    train: np.ndarray,
    test: np.ndarray,
    labels: Sequence[str],
    *,
    mlp_start: int,
    l2: float | None = None,
    config: MLPConfig | None = None,
) -> tuple[MLPHead, dict[str, Any]]:
    """Select by CV on ``train``, fit on ``train``, report on ``test``.

    Args:
        X: (N, D + F) inputs.
        y: (N,) int labels.
        train: Training row indices, in CV fold order (label-independent).
        test: Held-out row indices.
        labels: K class names.
        mlp_start: D.
        l2: Linear penalty, or None to choose it by CV.
        config: MLP hyper-parameters.

    Returns:
        The head and its metrics (``held_out`` report + CV scores).
    """
    config = config or MLPConfig()
    l2, epochs, cv = select_color_head(
        X[train], y[train], labels, mlp_start=mlp_start, l2=l2, config=config
    )
    (head,) = fit_color_head(
        X[train], y[train], labels, mlp_start=mlp_start, l2=l2, epochs=(epochs,), config=config
    )
    report = classification_report(y[test], head.predict_proba(X[test]), labels)
    head.metadata["features"] = {
        "input": "[embedding, color features]",
        "embedding_dim": mlp_start,
        "color_features": FEATURE_ID,
        "color_features_dim": FEATURE_DIM,
    }
    return head, {"held_out": report, **cv}
