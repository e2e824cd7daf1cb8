"""Label-issue ranking of a dataset version: confident learning on cached embeddings.

Every labelled item is scored by linear heads that never saw its group
(k-fold out-of-fold probabilities, :mod:`cartag.training.fitting.cleaning`), per task
(image type, color). Its *suspicion* for a task is

    suspicion = [another class is confidently predicted] + (1 - margin) / 2

where ``margin = p[given] - max_{other} p[other]`` and "confidently predicted"
means ``p[j] >= t[j]``, the mean self-confidence of class ``j`` (the confident
joint's off-diagonal). So suspicion lies in [0, 2]: above 1 = confident
learning counts the label as a likely error; within each half, a lower
self-confidence ranks higher. The item keeps its most suspicious task's score,
with that task's out-of-fold prediction as ``model_label`` / ``model_confidence``.

Flagged items (conflicts) are scored but never trained on.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, Protocol

import numpy as np
from PIL import Image

from cartag.store import embeddings as embedding_repo
from cartag.store.blobs import BlobStore
from cartag.store.db import Database
from cartag.training.fitting.cleaning import (
    class_balance,
    class_thresholds,
    fold_assignment,
    out_of_fold_logits,
    out_of_fold_proba,
    rank_suspicious,
)
from cartag.vocab import COLORS, IMAGE_TYPES

TASKS: Final[dict[str, tuple[str, ...]]] = {"image_type": IMAGE_TYPES, "color": COLORS}
DEFAULT_FOLDS: Final[int] = 5
# Fewer labelled examples than this per fold make out-of-fold heads meaningless.
MIN_PER_FOLD: Final[int] = 2


class Embedder(Protocol):
    """What ranking needs from a backbone (:class:`cartag.models.backbone.Backbone` fits)."""

    backbone_id: str
    input_size: int

    def embed_images(self, images: Sequence[Image.Image]) -> np.ndarray:
        """(B,) images -> float32 (B, D)."""
        ...


def ensure_embeddings(
    db: Database,
    blobs: BlobStore,
    embedder: Embedder,
    items: Sequence[tuple[str, str]],
    *,
    load: Callable[[bytes], Image.Image],
    now: dt.datetime,
    batch_size: int = 16,
    advance: Callable[[int], None] | None = None,
) -> np.ndarray:
    """Embeddings of items, from the store's cache; missing ones are computed and saved.

    Args:
        db: The database holding the ``embeddings`` table.
        blobs: Where the items' bytes are.
        embedder: Computes missing embeddings; its ``backbone_id`` keys the cache.
        items: N ``(content_sha256, blob_path)`` pairs.
        load: Decodes a blob's bytes into an RGB image.
        now: Timestamp of new cache rows.
        batch_size: Images per embedder call.
        advance: Called with the number of items done (cached ones at once).

    Returns:
        float32 (N, D).
    """
    shas = [sha for sha, _ in items]
    with db.read() as session:
        found = embedding_repo.load_embeddings(session, embedder.backbone_id, shas)
    missing = list(dict.fromkeys((sha, path) for sha, path in items if sha not in found))
    if advance is not None:
        advance(len(items) - len(missing))
    for start in range(0, len(missing), batch_size):
        chunk = missing[start : start + batch_size]
        vectors = embedder.embed_images([load(blobs.get(path)) for _, path in chunk])
        new = {sha: vec for (sha, _), vec in zip(chunk, vectors, strict=True)}
        with db.write() as session:
            embedding_repo.save_embeddings(session, embedder.backbone_id, new, now)
        found.update({sha: np.asarray(v, dtype=np.float32) for sha, v in new.items()})
        if advance is not None:
            advance(sum(1 for sha, _ in items if sha in new))
    if not items:
        return np.zeros((0, 0), dtype=np.float32)
    return np.stack([found[sha] for sha in shas]).astype(np.float32)


@dataclass(frozen=True)
class ItemScore:
    """The ranking of one item (see the module docstring)."""

    suspicion: float
    model_label: str
    model_confidence: float
    task: str
    flagged: bool


@dataclass
class Ranking:
    """Scores per item (None: no labelled task could be scored) and a summary."""

    scores: list[ItemScore | None]
    summary: dict[str, Any] = field(default_factory=dict)


def rank_items(
    emb: np.ndarray,
    labels: Sequence[tuple[str | None, str | None]],
    group_keys: Sequence[str],
    trainable: np.ndarray,
    *,
    folds: int = DEFAULT_FOLDS,
    l2: float = 0.1,
) -> Ranking:
    """Score every item's labels with out-of-fold probabilities.

    Args:
        emb: (N, D) embeddings.
        labels: N ``(image_type, color)`` pairs (None = no label for that task).
        group_keys: N group keys: near-duplicates and same-listing items share a fold.
        trainable: bool (N,): items the heads may learn from (included ones).
        folds: k of the k-fold.
        l2: Penalty of the linear heads.

    Returns:
        Per-item scores and ``summary["tasks"][task]`` = scored / flagged counts,
        per-class thresholds, or ``skipped`` with the reason.
    """
    n = len(labels)
    best: list[ItemScore | None] = [None] * n
    summary: dict[str, Any] = {"folds": folds, "l2": l2, "tasks": {}}
    for t, (task, vocab) in enumerate(TASKS.items()):
        given = np.asarray(
            [vocab.index(pair[t]) if pair[t] is not None else -1 for pair in labels],
            dtype=np.int64,
        )
        train_y = np.where(trainable, given, -1)
        k = min(folds, len(set(group_keys)))
        present = len(set(train_y[train_y >= 0].tolist()))
        if present < 2 or k < 2 or (train_y >= 0).sum() < MIN_PER_FOLD * k:
            summary["tasks"][task] = {
                "skipped": f"needs 2+ classes and {MIN_PER_FOLD * max(k, 2)}+ labelled items "
                f"in 2+ groups (has {present} classes, {int((train_y >= 0).sum())} items)"
            }
            continue
        fold = fold_assignment(list(group_keys), k)
        proba = out_of_fold_proba(out_of_fold_logits(emb, train_y, vocab, fold, l2=l2))
        thresholds = class_thresholds(proba, train_y)
        records = rank_suspicious(proba, given, thresholds)
        for rec in records:
            score = (1.0 if rec.flagged else 0.0) + (1.0 - rec.margin) / 2.0
            current = best[rec.index]
            if current is None or score > current.suspicion:
                best[rec.index] = ItemScore(
                    suspicion=round(score, 6),
                    model_label=vocab[rec.predicted],
                    model_confidence=round(float(proba[rec.index, rec.predicted]), 6),
                    task=task,
                    flagged=rec.flagged,
                )
        summary["tasks"][task] = {
            "scored": len(records),
            "flagged": sum(1 for r in records if r.flagged),
            "folds": k,
            "thresholds": {
                vocab[c]: round(float(v), 4) for c, v in enumerate(thresholds) if not np.isnan(v)
            },
        }
    return Ranking(best, summary)


def balance_report(
    labels: Sequence[tuple[str | None, str | None]], splits: Sequence[str | None]
) -> dict[str, Any]:
    """Class balance per task (:func:`cartag.training.fitting.cleaning.class_balance`).

    Args:
        labels: ``(image_type, color)`` of the included items.
        splits: Their splits; anything but ``train`` counts as held out.

    Returns:
        ``{task: {label: {"n", "share", "train", "held_out"}}}``.
    """
    held_out = np.asarray([s != "train" for s in splits], dtype=bool)
    report: dict[str, Any] = {}
    for t, (task, vocab) in enumerate(TASKS.items()):
        y = np.asarray(
            [vocab.index(pair[t]) if pair[t] is not None else -1 for pair in labels],
            dtype=np.int64,
        )
        report[task] = class_balance(y, vocab, held_out) if len(y) else {}
    return report
