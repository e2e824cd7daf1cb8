"""The bundled model's color head, trained on the rows of its corpus.

The head and its selection are :mod:`cartag.training.heads.color`; here the corpus
(:mod:`cartag.training.bundled.corpus`) becomes the head's inputs, the colors without
training photos get recolored ones (:mod:`cartag.training.heads.recolor`), and the
recolored photos are scored apart.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from cartag.models.color_features import FEATURE_DIM, FEATURE_ID, SIZE, color_features_batch
from cartag.models.heads import MLPHead
from cartag.training.bundled.corpus import Corpus
from cartag.training.datasets.dataset import file_loader, read_labels, split_key
from cartag.training.datasets.embedding_cache import EmbeddingCache
from cartag.training.heads.color import MLPConfig, build_color_features, train_color_head
from cartag.training.heads.recolor import (
    RECOLORED_PER_COLOR,
    TARGETS,
    Recolored,
    missing_targets,
    synthesize,
)
from cartag.vocab import COLORS


def train_bundled_color_head(
    corpus: Corpus,
    data_dir: Path,
    cache_dir: Path,
    embed: Callable[[list[Image.Image]], np.ndarray],
    *,
    l2: float | None = None,
    recolored_per_color: int = RECOLORED_PER_COLOR,
    seed: int = 0,
    recolor_min_real: int = 1,
    config: MLPConfig | None = None,
) -> tuple[MLPHead, dict[str, Any]]:
    """The bundled model's color head, from the rows of a
    :mod:`~cartag.training.bundled.corpus` corpus.

    The colors of :data:`cartag.training.heads.recolor.TARGETS` that have no training
    photo get recolored ones (:mod:`cartag.training.heads.recolor`), made from
    training-split photos only. The held-out report is on real photos only;
    recolored held-out photos are scored separately (``recolored.held_out_recall``:
    the same generator, so optimistic).

    Args:
        corpus: Embedded corpus; rows with ``color_idx >= 0`` are the labels.csv photos.
        data_dir: The vcr-train folder (for the color features of those photos).
        cache_dir: Embedding/feature cache folder.
        embed: Maps images to (B, D) embeddings (through the cache).
        l2: Linear penalty, or None to choose it by CV.
        recolored_per_color: Recolored photos per missing color (0 = none).
        seed: Seed of the recoloring.
        recolor_min_real: Target colors with fewer real training photos than this
            get recolored ones (1 = only colors with none).
        config: MLP hyper-parameters (default :class:`~cartag.training.heads.color.MLPConfig`;
            an ``epoch_grid`` of one value fixes the epochs).

    Returns:
        The head (input: embedding then color features) and its metrics.
    """
    rows = np.flatnonzero(corpus.color_idx >= 0)
    if corpus.files:
        # A corpus of several sources (build_corpus_all): files and hashes per row.
        files = [Path(str(corpus.files[i])) for i in rows]
        cache = EmbeddingCache.in_folder(cache_dir, FEATURE_ID, f"to-rgb-bilinear-{SIZE}")
        features = cache.get_or_compute(
            [corpus.content[i] for i in rows], file_loader(files), color_features_batch
        )
    else:
        samples = read_labels(data_dir)
        if [corpus.keys[i] for i in rows] != [s.path for s in samples]:
            raise ValueError("the corpus' color rows are not the labels.csv photos in file order")
        files = [s.file for s in samples]
        features = build_color_features(samples, cache_dir)
    colors = [COLORS[int(corpus.color_idx[i])] for i in rows]
    dim = corpus.emb.shape[1]
    X = np.zeros((len(corpus.keys), dim + FEATURE_DIM), dtype=np.float32)
    X[rows] = np.concatenate([corpus.emb[rows], features], axis=1)
    held = corpus.holdout[rows]
    train_at = [j for j, h in enumerate(held) if not h]
    check_at = [j for j, h in enumerate(held) if h]
    missing = missing_targets([colors[j] for j in train_at], recolor_min_real)
    made = synthesize(
        [colors[j] for j in train_at],
        file_loader([files[j] for j in train_at]),
        recolored_per_color,
        seed,
        missing,
    )
    checks = synthesize(
        [colors[j] for j in check_at],
        file_loader([files[j] for j in check_at]),
        recolored_per_color // 3,
        seed + 1,
        missing,
    )
    y = corpus.color_idx
    keys = list(corpus.keys)
    if made:
        X = np.concatenate([X, _recolored_inputs(made, embed)])
        y = np.concatenate([y, [COLORS.index(r.color) for r in made]])
        keys += [f"recolor:{r.color}:{corpus.keys[rows[train_at[r.source]]]}" for r in made]
    n_real = len(corpus.keys)
    train = np.concatenate(
        [np.flatnonzero(~corpus.holdout & (corpus.color_idx >= 0)), n_real + np.arange(len(made))]
    )
    # CV folds are taken by position, so order by a key hash (as for the type head).
    train = train[np.argsort([split_key("cv:" + keys[i]) for i in train])]
    test = np.flatnonzero(corpus.holdout & (corpus.color_idx >= 0))
    head, metrics = train_color_head(X, y, train, test, COLORS, mlp_start=dim, l2=l2, config=config)
    if made:
        metrics["recolored"] = _recolored_metrics(head, made, checks, embed)
    metrics["recolor_rule"] = {
        "min_real_training_photos": recolor_min_real,
        "real_training_photos": {c: sum(1 for j in train_at if colors[j] == c) for c in TARGETS},
        "recolored_colors": missing,
    }
    return head, metrics


def _recolored_inputs(
    made: Sequence[Recolored], embed: Callable[[list[Image.Image]], np.ndarray]
) -> np.ndarray:
    """(N, D + F) head inputs of recolored photos: embeddings then color features."""
    images = [r.image for r in made]
    return np.concatenate([embed(images), color_features_batch(images)], axis=1)


def _recolored_metrics(
    head: MLPHead,
    made: Sequence[Recolored],
    checks: Sequence[Recolored],
    embed: Callable[[list[Image.Image]], np.ndarray],
) -> dict[str, Any]:
    """What was generated, and the head's recall on recolored held-out photos."""
    recall: dict[str, float] = {}
    if checks:
        pred = head.predict_proba(_recolored_inputs(checks, embed)).argmax(axis=1)
        truth = np.asarray([COLORS.index(r.color) for r in checks])
        for color in TARGETS:
            picked = truth == COLORS.index(color)
            if picked.any():
                recall[color] = round(float((pred[picked] == truth[picked]).mean()), 4)
    return {
        "generator": "cartag.training.heads.recolor",
        "train_counts": dict(Counter(r.color for r in made)),
        "sources": {color: list(spec.sources) for color, spec in TARGETS.items()},
        "held_out_counts": dict(Counter(r.color for r in checks)),
        "held_out_recall": recall,
    }
