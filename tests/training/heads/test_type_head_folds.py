"""The type head's CV folds keep design families, repositories and near-duplicates whole."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cartag.imaging.placeholders import FAMILIES
from cartag.training.fitting import cleaning
from cartag.training.heads.type_head import CV_FOLDS, grouped_folds, train_type_head
from cartag.vocab import IMAGE_TYPES


def _one_side(fold: np.ndarray, labels: Sequence[str]) -> dict[str, set[int]]:
    seen: dict[str, set[int]] = defaultdict(set)
    for f, label in zip(fold.tolist(), labels, strict=True):
        if label:
            seen[label].add(f)
    return seen


def _synthetic() -> tuple[list[str], list[str]]:
    """Real singletons, a near-duplicate pair, type-train repositories, placeholders."""
    keys = [f"vcr-train/Red/{i}.jpg" for i in range(60)]
    pinned = [""] * 60
    # Two real photos that are near-duplicates share the group key of the first.
    keys[11] = keys[10]
    for r in range(9):
        for j in range(2 + r):
            keys.append(f"type-train/repo{r}/{j}.jpg")
            pinned.append(f"repo:repo{r}")
    # A near-duplicate linking two repositories merges them.
    keys[-1] = "type-train/repo0/0.jpg"
    families = list(FAMILIES)
    for i in range(140):
        keys.append(f"placeholder/0/{i:04d}")
        pinned.append(f"family:{families[i % len(families)]}")
    return keys, pinned


def test_each_family_repository_and_near_duplicate_group_is_in_one_fold() -> None:
    keys, pinned = _synthetic()
    fold = grouped_folds(keys, pinned, CV_FOLDS)
    assert fold.shape == (len(keys),) and set(fold.tolist()) <= set(range(CV_FOLDS))
    for label, folds in _one_side(fold, pinned).items():
        assert len(folds) == 1, label
    for key, folds in _one_side(fold, keys).items():
        assert len(folds) == 1, key
    # repo8 shares an image with repo0, so the two repositories share a fold.
    repo = np.asarray(pinned)
    assert set(fold[repo == "repo:repo8"]) == set(fold[repo == "repo:repo0"])
    # Families are spread: with 7 families and 5 folds every fold holds one or two.
    per_fold = defaultdict(set)
    for f, label in zip(fold.tolist(), pinned, strict=True):
        if label.startswith("family:"):
            per_fold[f].add(label)
    assert sorted(len(v) for v in per_fold.values()) == [1, 1, 1, 2, 2]
    # Every fold that is held out leaves Placeholder rows of other families to train on.
    placeholder = np.asarray([p.startswith("family:") for p in pinned])
    for f in range(CV_FOLDS):
        assert (placeholder & (fold != f)).any()


def test_rows_without_a_label_keep_the_ungrouped_assignment() -> None:
    keys, pinned = _synthetic()
    fold = grouped_folds(keys, pinned, CV_FOLDS)
    plain = cleaning.fold_assignment(keys, CV_FOLDS)
    free = list(range(60))  # real vcr rows: no label, no link to a labelled row
    assert fold[free].tolist() == plain[free].tolist()
    assert grouped_folds(keys, [""] * len(keys), CV_FOLDS).tolist() == plain.tolist()


def test_the_assignment_is_deterministic_and_checks_lengths() -> None:
    keys, pinned = _synthetic()
    assert (
        grouped_folds(keys, pinned, CV_FOLDS).tolist()
        == grouped_folds(keys, pinned, CV_FOLDS).tolist()
    )
    with pytest.raises(ValueError):
        grouped_folds(keys, pinned[:-1], CV_FOLDS)


@dataclass
class _Corpus:
    keys: list[str]
    emb: np.ndarray
    family: list[str]
    holdout: np.ndarray


def _embed(images: list[Image.Image]) -> np.ndarray:
    return np.asarray(
        [
            np.asarray(im.convert("RGB").resize((8, 8)), dtype=np.float32).mean(axis=(0, 1)) / 255
            for im in images
        ]
    )


def test_train_type_head_records_folds_that_keep_families_apart() -> None:
    rng = np.random.default_rng(0)
    families = list(FAMILIES)
    n_real, n_ph = 60, 70
    real_type = rng.integers(0, 2, n_real)  # Dealer / Stock
    emb = np.concatenate(
        [
            real_type[:, None] * 0.5 + rng.normal(0.2, 0.05, (n_real, 3)),
            rng.uniform(0, 1, (n_ph, 3)),
        ]
    ).astype(np.float32)
    targets = np.concatenate([real_type, np.full(n_ph, IMAGE_TYPES.index("Placeholder"))])
    corpus = _Corpus(
        keys=[f"type-train/r{i % 6}/{i}.jpg" for i in range(n_real)]
        + [f"placeholder/0/{i:04d}" for i in range(n_ph)],
        emb=emb,
        family=[""] * n_real + [families[i % len(families)] for i in range(n_ph)],
        holdout=np.arange(n_real + n_ph) % 5 == 0,
    )
    cv_groups = [f"repo:r{i % 6}" for i in range(n_real)] + [
        f"family:{f}" for f in corpus.family[n_real:]
    ]
    hashes = [f"{int(v):016x}" for v in rng.integers(0, 2**63, size=n_real)]
    _, metrics = train_type_head(
        corpus,
        Path("."),
        _embed,
        l2=1.0,
        n_eval_placeholders=7,
        hashes=hashes,
        targets=targets,
        cv_groups=cv_groups,
    )
    folds = metrics["cv_folds"]["folds"]
    seen = [f for fold in folds.values() for f in fold["placeholder_families"]]
    assert sorted(seen) == sorted(families)  # each family in exactly one fold
    assert sum(fold["repositories"] for fold in folds.values()) == 6
