"""The image-type head: cleaned labels, synthetic placeholders, calibrated confidence.

Labels for real photos come from ``type_labels.csv``
(:mod:`cartag.training.datasets.type_labels`): the vcr-train weak rule, corrected and
completed by review with the tools of :mod:`cartag.training.fitting.cleaning`. Placeholder
examples are the synthetic ones of :mod:`cartag.imaging.placeholders`.

Only the training split is used for fitting, choosing ``l2`` and fitting the
temperature; the held-out split (rule in :mod:`cartag.training.datasets.dataset`) and
the independent placeholder designs of :mod:`cartag.training.datasets.placeholders_eval`
are only scored.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Final, Protocol

import numpy as np
from PIL import Image

from cartag.imaging.keys import phash
from cartag.models.heads import LinearHead
from cartag.training.datasets.placeholders_eval import EVAL_FAMILIES, generate_eval_placeholders
from cartag.training.datasets.type_labels import TYPE_LABELS_PATH, cleaning_counts, read_type_labels
from cartag.training.fitting import calibration, cleaning
from cartag.training.fitting.fit import balanced_accuracy, fit_linear_head
from cartag.training.fitting.metrics import classification_report
from cartag.training.heads import placeholder_offset
from cartag.vocab import IMAGE_TYPES

# Out-of-fold balanced accuracy is nearly flat over the grid on vcr-train (0.951-0.955
# on the fine-tuned embeddings), peaking at 1-3: stronger penalties than the frozen
# ImageNet embeddings wanted (0.3 was the top of the old grid and was chosen).
L2_GRID: Final[tuple[float, ...]] = (0.03, 0.1, 0.3, 1.0, 3.0, 10.0)
CV_FOLDS: Final[int] = 5
# pHash links at 6 bits still catch re-encoded/cropped copies in vcr-train; a
# false link only keeps two images in one fold, so erring wide is cheap.
DUPLICATE_MAX_DISTANCE: Final[int] = 6
CONFIDENCE_THRESHOLDS: Final[tuple[float, ...]] = (0.5, 0.6, 0.7, 0.8, 0.9)
PLACEHOLDER: Final[int] = IMAGE_TYPES.index("Placeholder")


class TypeCorpus(Protocol):
    """What :func:`train_type_head` needs from :class:`cartag.training.bundled.corpus.Corpus`."""

    keys: list[str]
    emb: np.ndarray
    family: list[str]
    holdout: np.ndarray


def file_phashes(data_dir: Path, paths: Sequence[str]) -> list[str]:
    """pHash of each labels.csv path (relative to ``data_dir.parent``)."""
    hashes = []
    for path in paths:
        with Image.open(data_dir.parent / path) as image:
            hashes.append(phash(image.convert("RGB")))
    return hashes


def grouped_folds(group_keys: Sequence[str], pinned: Sequence[str], folds: int) -> np.ndarray:
    """CV folds that keep near-duplicates and whole named groups on one side.

    Rows without a ``pinned`` label get :func:`cleaning.fold_assignment` of their
    near-duplicate group key (the assignment used without groups). Rows sharing a
    near-duplicate key or a ``pinned`` label (``"family:<design family>"``,
    ``"repo:<repository>"``) form one component; each component holding a label
    goes whole into one fold, largest first into the fold with the fewest rows of
    its label's kind (the text before ``:``), so each kind is spread over the folds
    and every held-out fold scores designs or sources its training folds lack.

    Args:
        group_keys: N near-duplicate group keys (:func:`cleaning.group_keys`).
        pinned: N labels, ``""`` for none.
        folds: Number of folds.

    Returns:
        int64 (N,) fold index in ``[0, folds)``.
    """
    if len(pinned) != len(group_keys):
        raise ValueError("group_keys and pinned must have the same length")
    fold = cleaning.fold_assignment(group_keys, folds)
    parent = list(range(len(group_keys)))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    first: dict[str, int] = {}
    for i, (key, label) in enumerate(zip(group_keys, pinned, strict=True)):
        for link in (f"dup\0{key}", f"pin\0{label}" if label else ""):
            if not link:
                continue
            j = first.setdefault(link, i)
            a, b = find(i), find(j)
            if a != b:
                parent[max(a, b)] = min(a, b)
    components: dict[int, list[int]] = {}
    for i in range(len(group_keys)):
        components.setdefault(find(i), []).append(i)
    named = []
    for rows in components.values():
        labels = sorted(pinned[i] for i in rows if pinned[i])
        if labels:
            named.append((-len(rows), labels[0], rows))
    load: dict[str, np.ndarray] = {}
    total = np.zeros(folds, dtype=np.int64)
    for size, label, rows in sorted(named, key=lambda c: (c[0], c[1])):
        kind = load.setdefault(label.split(":", 1)[0], np.zeros(folds, dtype=np.int64))
        best = min(range(folds), key=lambda f: (kind[f], total[f], f))
        fold[rows] = best
        kind[best] -= size
        total[best] -= size
    return fold


def _fold_summary(fold: np.ndarray, pinned: Sequence[str], y: np.ndarray) -> dict[str, Any]:
    """Rows per fold and class, and the labelled groups of each fold (for the metrics)."""
    out: dict[str, Any] = {}
    for f in np.unique(fold).tolist():
        mine = np.flatnonzero(fold == f).tolist()
        n = Counter(y[mine].tolist())
        families = sorted(
            {pinned[i].split(":", 1)[1] for i in mine if pinned[i].startswith("family:")}
        )
        out[str(f)] = {
            "n": int(len(mine)),
            "by_type": {IMAGE_TYPES[k]: n[k] for k in range(len(IMAGE_TYPES)) if n[k]},
            "placeholder_families": families,
            "repositories": len({pinned[i] for i in mine if pinned[i].startswith("repo:")}),
        }
    return out


def _choose_l2(
    X: np.ndarray, y: np.ndarray, fold: np.ndarray, grid: Sequence[float]
) -> tuple[float, np.ndarray, dict[str, float]]:
    """Best l2 by out-of-fold balanced accuracy (ties: the larger); its OOF logits."""
    best: tuple[float, float, np.ndarray] | None = None
    scores: dict[str, float] = {}
    for l2 in sorted(grid, reverse=True):
        logits = cleaning.out_of_fold_logits(X, y, IMAGE_TYPES, fold, l2=l2)
        score = balanced_accuracy(y, logits.argmax(axis=1))
        scores[repr(l2)] = round(score, 4)
        if best is None or score > best[1] + 1e-9:
            best = (l2, score, logits)
    assert best is not None
    return best[0], best[2], scores


def _placeholder_metrics(
    corpus: TypeCorpus,
    y: np.ndarray,
    pred: np.ndarray,
    eval_pred: np.ndarray,
    eval_family: Sequence[str],
) -> dict[str, Any]:
    """Placeholder precision against every held-out real photo; recall on unseen designs."""
    held = corpus.holdout
    real = np.asarray([not f for f in corpus.family])
    called = pred == PLACEHOLDER
    # Every held-out real image that is not a labelled Placeholder (type-train has
    # real ones) counts as a false positive, labelled for type or not.
    true_ph = y == PLACEHOLDER
    false_pos = np.flatnonzero(held & real & called & ~true_ph)
    synthetic_tp = int((held & called & true_ph).sum())
    eval_tp = int((eval_pred == PLACEHOLDER).sum())

    def precision(tp: int) -> float:
        return round(tp / max(1, tp + len(false_pos)), 4)

    families = np.asarray(eval_family)
    per_family = {
        family: round(float((eval_pred[families == family] == PLACEHOLDER).mean()), 4)
        for family in EVAL_FAMILIES
        if family in eval_family
    }
    return {
        "n_real_held_out": int((held & real).sum()),
        "real_held_out_called_placeholder": [corpus.keys[i] for i in false_pos],
        "precision_held_out": precision(synthetic_tp),
        "precision_eval_designs_vs_real": precision(eval_tp),
        "n_eval_designs": len(eval_family),
        "recall_eval_designs": round(eval_tp / max(1, len(eval_family)), 4),
        "recall_eval_designs_by_family": per_family,
        "eval_generator": "cartag.training.datasets.placeholders_eval",
    }


def train_type_head(
    corpus: TypeCorpus,
    data_dir: Path,
    embed: Callable[[list[Image.Image]], np.ndarray],
    *,
    labels_path: Path = TYPE_LABELS_PATH,
    l2: float | None = None,
    n_eval_placeholders: int = 320,
    eval_seed: int = 0,
    hashes: Sequence[str] | None = None,
    targets: np.ndarray | None = None,
    cv_groups: Sequence[str] | None = None,
    offset: float | None = None,
) -> tuple[LinearHead, dict[str, Any]]:
    """Fit, calibrate and evaluate the image-type head.

    Args:
        corpus: Embedded rows; real photos have ``family == ""`` and a labels.csv
            path as key, synthetic placeholders a non-empty family.
        data_dir: The vcr-train folder (its images are pHashed for duplicates).
        embed: Maps images to (B, D) embeddings (through the cache).
        labels_path: Cleaned labels.
        l2: Fixed penalty, or None to choose from :data:`L2_GRID` by out-of-fold
            balanced accuracy on the training split.
        n_eval_placeholders: Independent placeholder designs to score.
        eval_seed: Seed of those designs.
        hashes: pHashes of the real rows in corpus order (default: computed).
        targets: (N,) type index per corpus row (-1 = no label), for corpora of
            several sources (:func:`cartag.training.bundled.corpus.build_corpus_all`);
            None = real rows from ``labels_path``, synthetic rows Placeholder.
        cv_groups: N labels per corpus row (``"family:<design family>"``,
            ``"repo:<repository>"``, ``""`` for none) whose rows CV keeps in one fold
            (:func:`grouped_folds`), so the choice of ``l2`` rewards designs and
            sources the fold did not train on; None = near-duplicate groups only.
        offset: Fixed Placeholder logit offset, or None to choose it on the out-of-fold
            logits (:func:`cartag.training.heads.placeholder_offset.choose_offset`).

    Returns:
        The head (temperature in ``metadata``) and its metrics dict.
    """
    labels = read_type_labels(labels_path)
    real_rows = [i for i, f in enumerate(corpus.family) if not f]
    y = np.full(len(corpus.keys), cleaning.UNLABELLED, dtype=np.int64)
    if targets is not None:
        y[:] = targets
    else:
        for i, key in enumerate(corpus.keys):
            if corpus.family[i]:
                y[i] = PLACEHOLDER
            elif key in labels:
                y[i] = IMAGE_TYPES.index(labels[key].type)

    real_keys = [corpus.keys[i] for i in real_rows]
    real_hashes = list(hashes) if hashes is not None else file_phashes(data_dir, real_keys)
    groups = [
        [real_rows[j] for j in g]
        for g in cleaning.phash_groups(real_hashes, DUPLICATE_MAX_DISTANCE)
    ]
    dropped = cleaning.straddling_rows(groups, corpus.holdout)
    train_mask = ~corpus.holdout & (y >= 0)
    train_mask[dropped] = False
    train = np.flatnonzero(train_mask)
    group_of = cleaning.group_keys(len(corpus.keys), groups, corpus.keys)
    if cv_groups is None:
        fold = cleaning.fold_assignment([group_of[i] for i in train], CV_FOLDS)
    else:
        if len(cv_groups) != len(corpus.keys):
            raise ValueError(f"cv_groups has {len(cv_groups)} rows, the corpus {len(corpus.keys)}")
        pinned = [cv_groups[i] for i in train.tolist()]
        fold = grouped_folds([group_of[i] for i in train], pinned, CV_FOLDS)

    X, y_train = corpus.emb[train], y[train]
    chosen, oof_logits, cv_scores = _choose_l2(X, y_train, fold, L2_GRID if l2 is None else [l2])
    real_train = np.asarray([not corpus.family[i] for i in train.tolist()], dtype=bool)
    offset, offset_record = placeholder_offset.choose_offset(
        oof_logits, y_train, real_train, fixed=offset
    )
    oof_logits = placeholder_offset.apply_offset(oof_logits, offset)
    # The temperature is fitted to the logits the head will serve, offset included.
    temperature = calibration.fit_temperature(oof_logits, y_train)
    head = fit_linear_head(X, y_train, IMAGE_TYPES, l2=chosen)
    head.bias = placeholder_offset.apply_offset(head.bias, offset)
    head.metadata["placeholder_logit_offset"] = offset
    head.metadata["temperature"] = temperature
    head.metadata["calibration"] = {
        "method": "temperature scaling (NLL, golden-section search)",
        "fit_on": f"{CV_FOLDS}-fold out-of-fold logits of the training split",
    }

    test = np.flatnonzero(corpus.holdout & (y >= 0))
    raw = calibration.calibrated_proba(head.logits(corpus.emb[test]), 1.0)
    cal = head.predict_proba(corpus.emb[test]).astype(np.float64)
    pred = np.full(len(corpus.keys), -1, dtype=np.int64)
    held = np.flatnonzero(corpus.holdout)
    pred[held] = head.predict_proba(corpus.emb[held]).argmax(axis=1)

    eval_set = generate_eval_placeholders(n_eval_placeholders, seed=eval_seed)
    eval_pred = head.predict_proba(embed([p.image for p in eval_set])).argmax(axis=1)

    split = corpus.holdout.copy()
    metrics: dict[str, Any] = {
        "held_out": classification_report(y[test], cal, IMAGE_TYPES),
        "label_source": "cleaned type_labels.csv (+ synthetic placeholders)",
        "label_cleaning": cleaning_counts(labels),
        "class_balance": cleaning.class_balance(y, IMAGE_TYPES, split),
        "near_duplicates": {
            "max_distance": DUPLICATE_MAX_DISTANCE,
            "groups": len(groups),
            "rows_in_groups": sum(len(g) for g in groups),
            "train_rows_dropped_for_held_out_twin": len(dropped),
        },
        "calibration": {
            "temperature": temperature,
            "ece_held_out_before": round(calibration.expected_calibration_error(raw, y[test]), 4),
            "ece_held_out_after": round(calibration.expected_calibration_error(cal, y[test]), 4),
            "nll_held_out_before": round(calibration.nll(np.log(raw + 1e-12), y[test], 1.0), 4),
            "nll_held_out_after": round(calibration.nll(np.log(cal + 1e-12), y[test], 1.0), 4),
            "bins": 15,
        },
        # The threshold is chosen on the out-of-fold table; held-out only confirms it.
        "low_confidence_out_of_fold": calibration.confidence_table(
            calibration.calibrated_proba(oof_logits, temperature), y_train, CONFIDENCE_THRESHOLDS
        ),
        "low_confidence_held_out": calibration.confidence_table(
            cal, y[test], CONFIDENCE_THRESHOLDS
        ),
        "placeholder": _placeholder_metrics(
            corpus, y, pred, eval_pred, [p.family for p in eval_set]
        ),
        "placeholder_offset": offset_record,
    }
    if cv_scores and l2 is None:
        metrics["l2_cv_balanced_accuracy"] = cv_scores
    if cv_groups is not None:
        metrics["cv_folds"] = {
            "rule": (
                "near-duplicate groups, placeholder design families and type-train "
                "repositories each wholly in one fold "
                "(cartag.training.heads.type_head.grouped_folds)"
            ),
            "folds": _fold_summary(fold, pinned, y_train),
        }
    return head, metrics
