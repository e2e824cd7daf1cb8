"""Label-cleaning tools: suspicion ranking, near-duplicate groups, class balance.

These work on any labelled image set (arrays and hashes in, plain records out),
so the same functions back training-time cleaning and a product review queue:

* :func:`out_of_fold_logits` scores every example with a linear head that never
  saw it (k-fold, near-duplicates kept in one fold);
* :func:`rank_suspicious` turns those scores into confident-learning suspicion
  records (Northcutt et al., "Confident Learning", JAIR 2021), most suspicious first;
* :func:`phash_groups` / :func:`duplicate_groups` find near-duplicates by 64-bit
  pHash so that they can be kept on one side of a split and their labels compared;
* :func:`class_balance` summarises label counts.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from cartag.models.heads import softmax
from cartag.training.fitting.fit import fit_linear_head

UNLABELLED = -1


def fold_assignment(
    group_keys: Sequence[str], folds: int, *, salt: str = "cartag-cv"
) -> np.ndarray:
    """Deterministic fold per row; rows with the same group key share a fold.

    Args:
        group_keys: N keys (e.g. a near-duplicate group id or the row's own path).
        folds: Number of folds.
        salt: Changes the assignment without changing the keys.

    Returns:
        int64 (N,) fold index in ``[0, folds)``.
    """
    if folds < 2:
        raise ValueError("folds must be at least 2")
    digests = [hashlib.sha256(f"{salt}:{key}".encode()).digest()[:8] for key in group_keys]
    return np.asarray([int.from_bytes(d, "big") % folds for d in digests], dtype=np.int64)


def out_of_fold_logits(
    X: np.ndarray,
    y: np.ndarray,
    labels: Sequence[str],
    fold: np.ndarray,
    *,
    l2: float = 0.1,
    always_train: np.ndarray | None = None,
) -> np.ndarray:
    """Logits for every row from a linear head fitted without that row's fold.

    Unlabelled rows (``y == -1``) are never trained on; they are scored by the
    head of their own fold like any other row.

    Args:
        X: (N, D) embeddings.
        y: (N,) int label indices into ``labels``, -1 = unlabelled.
        labels: K class names.
        fold: (N,) fold index per row (see :func:`fold_assignment`).
        l2: Penalty of :func:`cartag.training.fitting.fit.fit_linear_head`.
        always_train: Optional bool (N,): labelled rows that are in every
            training set and are scored in-sample (e.g. synthetic examples of a
            class the real data lacks, which need no cleaning).

    Returns:
        float64 (N, K) out-of-fold logits (temperature 1).
    """
    y = np.asarray(y, dtype=np.int64)
    extra = np.zeros(len(y), dtype=bool) if always_train is None else np.asarray(always_train)
    out = np.zeros((len(y), len(labels)), dtype=np.float64)
    for f in np.unique(fold):
        train = ((fold != f) | extra) & (y >= 0)
        head = fit_linear_head(X[train], y[train], labels, l2=l2)
        scored = (fold == f) & ~extra
        out[scored] = head.logits(X[scored])
        if f == fold.min() and extra.any():
            out[extra] = head.logits(X[extra])
    return out


def out_of_fold_proba(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """Softmax of ``logits / temperature``: (N, K) -> (N, K)."""
    return softmax(np.asarray(logits, dtype=np.float64) / temperature)


def class_thresholds(proba: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Per-class confident-learning thresholds: mean self-confidence of each class.

    Args:
        proba: (N, K) out-of-fold probabilities.
        y: (N,) given labels, -1 = unlabelled (ignored).

    Returns:
        float64 (K,); NaN for a class with no labelled example.
    """
    k = proba.shape[1]
    thresholds = np.full(k, np.nan)
    for c in range(k):
        members = y == c
        if members.any():
            thresholds[c] = float(proba[members, c].mean())
    return thresholds


@dataclass(frozen=True)
class Suspicion:
    """How suspicious one given label is, from out-of-fold probabilities.

    Attributes:
        index: Row in the arrays passed to :func:`rank_suspicious`.
        given: Given label index.
        predicted: Argmax label index.
        self_confidence: Probability of the given label.
        margin: ``p[given] - max_{j != given} p[j]``; negative = the model prefers another class.
        confident_other: A class ``j != given`` with ``p[j] >= threshold[j]`` (the most
            probable such one), i.e. the example falls off the diagonal of the
            confident joint; None when no other class is confidently predicted.
    """

    index: int
    given: int
    predicted: int
    self_confidence: float
    margin: float
    confident_other: int | None

    @property
    def flagged(self) -> bool:
        """True when confident learning counts the label as a likely error."""
        return self.confident_other is not None


def rank_suspicious(
    proba: np.ndarray, y: np.ndarray, thresholds: np.ndarray | None = None
) -> list[Suspicion]:
    """Suspicion record for every labelled row, most suspicious first.

    Order: rows flagged by the confident joint first, then by margin ascending
    (the model prefers another class most strongly), ties by row index.

    Args:
        proba: (N, K) out-of-fold probabilities.
        y: (N,) given labels, -1 = unlabelled (left out).
        thresholds: (K,) per-class thresholds; default :func:`class_thresholds`.

    Returns:
        One :class:`Suspicion` per labelled row.
    """
    y = np.asarray(y, dtype=np.int64)
    t = class_thresholds(proba, y) if thresholds is None else np.asarray(thresholds)
    # A class without labelled examples has no threshold; never call it confident.
    t = np.where(np.isnan(t), np.inf, t)
    records = []
    for i in np.flatnonzero(y >= 0):
        p = proba[i]
        given = int(y[i])
        others = np.delete(np.arange(len(p)), given)
        margin = float(p[given] - p[others].max())
        confident = [int(j) for j in others if p[j] >= t[j]]
        other = max(confident, key=lambda j: p[j]) if confident else None
        records.append(Suspicion(int(i), given, int(p.argmax()), float(p[given]), margin, other))
    records.sort(key=lambda s: (not s.flagged, s.margin, s.index))
    return records


def uncertain_rows(proba: np.ndarray, rows: np.ndarray, threshold: float) -> np.ndarray:
    """Rows whose top probability is below ``threshold``, least confident first.

    Args:
        proba: (N, K) probabilities.
        rows: Candidate row indices (e.g. the unlabelled ones).
        threshold: Confidence below which a row needs review.

    Returns:
        int64 (M,) row indices.
    """
    rows = np.asarray(rows, dtype=np.int64)
    top = proba[rows].max(axis=1)
    keep: np.ndarray = rows[top < threshold]
    ordered: np.ndarray = keep[np.argsort(proba[keep].max(axis=1), kind="stable")]
    return ordered


def phash_groups(hashes: Sequence[str], max_distance: int = 4) -> list[list[int]]:
    """Near-duplicate groups: connected components of "pHash within ``max_distance`` bits".

    Args:
        hashes: N 64-bit hex pHashes.
        max_distance: Largest Hamming distance that still links two images.

    Returns:
        Groups of row indices (each sorted, size >= 2), ordered by first member.
        Rows without a near-duplicate are in no group.
    """
    n = len(hashes)
    parent = list(range(n))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    # Row blocks keep the distance matrix at O(block * N) memory for large sets.
    block = 1024
    values = np.asarray([int(h, 16) for h in hashes], dtype=np.uint64)
    for start in range(0, n, block):
        dist = np.bitwise_count(values[start : start + block, None] ^ values[None, :])
        for a, b in zip(*np.nonzero(dist <= max_distance), strict=True):
            i, j = find(int(a) + start), find(int(b))
            if i != j:
                parent[max(i, j)] = min(i, j)
    members: dict[int, list[int]] = {}
    for i in range(n):
        members.setdefault(find(i), []).append(i)
    return sorted((g for g in members.values() if len(g) > 1), key=lambda g: g[0])


@dataclass(frozen=True)
class DuplicateGroup:
    """A near-duplicate group and the labels its members carry.

    Attributes:
        members: Row indices, sorted.
        labels: Label per member (None = unlabelled), same order.
    """

    members: tuple[int, ...]
    labels: tuple[str | None, ...]

    @property
    def conflicting(self) -> bool:
        """True when two members carry different (non-empty) labels."""
        return len({label for label in self.labels if label is not None}) > 1


def duplicate_groups(
    hashes: Sequence[str], labels: Sequence[str | None], max_distance: int = 4
) -> list[DuplicateGroup]:
    """:func:`phash_groups` with each member's label, for conflict review.

    Args:
        hashes: N 64-bit hex pHashes.
        labels: N labels (None = unlabelled).
        max_distance: See :func:`phash_groups`.
    """
    return [
        DuplicateGroup(tuple(g), tuple(labels[i] for i in g))
        for g in phash_groups(hashes, max_distance)
    ]


def group_keys(n: int, groups: Sequence[Sequence[int]], keys: Sequence[str]) -> list[str]:
    """A group id per row: the key of the group's first member, or the row's own key.

    Pass the result to :func:`fold_assignment` so that near-duplicates share a fold.

    Args:
        n: Number of rows.
        groups: Near-duplicate groups (row indices).
        keys: N row keys.
    """
    out = list(keys[:n])
    for group in groups:
        for i in group:
            out[i] = keys[group[0]]
    return out


def straddling_rows(groups: Sequence[Sequence[int]], holdout: np.ndarray) -> np.ndarray:
    """Training rows with a near-duplicate in the held-out split.

    A fixed split rule may put copies on both sides; dropping these rows from
    training keeps held-out images unseen without moving any row between splits.

    Args:
        groups: Near-duplicate groups (row indices).
        holdout: bool (N,) held-out mask.

    Returns:
        int64 (M,) sorted training-row indices.
    """
    rows = [i for g in groups if any(holdout[j] for j in g) for i in g if not holdout[i]]
    return np.asarray(sorted(set(rows)), dtype=np.int64)


def class_balance(
    y: np.ndarray, labels: Sequence[str], split: np.ndarray | None = None
) -> dict[str, dict[str, int | float]]:
    """Count and share of each label, overall and (optionally) per split.

    Args:
        y: (N,) label indices, -1 = unlabelled (counted as ``"(unlabelled)"``).
        labels: K class names.
        split: Optional bool (N,) held-out mask: adds ``train`` / ``held_out`` counts.

    Returns:
        ``{label: {"n", "share", ["train", "held_out"]}}`` with share of all N rows.
    """
    y = np.asarray(y, dtype=np.int64)
    names = [*labels, "(unlabelled)"]
    index = np.where(y >= 0, y, len(labels))
    report: dict[str, dict[str, int | float]] = {}
    for c, name in enumerate(names):
        members = index == c
        if not members.any() and c == len(labels):
            continue
        row: dict[str, int | float] = {
            "n": int(members.sum()),
            "share": round(float(members.mean()) if len(y) else 0.0, 4),
        }
        if split is not None:
            row["train"] = int((members & ~split).sum())
            row["held_out"] = int((members & split).sum())
        report[name] = row
    return report
