"""Label-cleaning tools on synthetic data: suspicion ranking, pHash groups, class balance."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

from cartag.imaging.keys import hamming, phash
from cartag.training.fitting import cleaning

LABELS = ("a", "b", "c")


def _separable(n_per_class: int = 120, d: int = 8, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    centers = rng.normal(0, 4, (len(LABELS), d))
    y = np.repeat(np.arange(len(LABELS)), n_per_class)
    X = centers[y] + rng.normal(0, 1, (len(y), d))
    return X.astype(np.float32), y


def test_injected_label_flips_are_ranked_first() -> None:
    X, y_true = _separable()
    rng = np.random.default_rng(1)
    flipped = rng.choice(len(y_true), size=12, replace=False)
    y = y_true.copy()
    y[flipped] = (y[flipped] + rng.integers(1, len(LABELS), size=12)) % len(LABELS)

    fold = cleaning.fold_assignment([f"row-{i}" for i in range(len(y))], 5)
    logits = cleaning.out_of_fold_logits(X, y, LABELS, fold, l2=0.1)
    proba = cleaning.out_of_fold_proba(logits)
    ranked = cleaning.rank_suspicious(proba, y)

    assert len(ranked) == len(y)
    assert {s.index for s in ranked[:12]} == set(flipped.tolist())
    assert all(s.margin < 0 and s.predicted == y_true[s.index] for s in ranked[:12])
    # The confident joint catches most flips; the rest still sort by margin right behind.
    flagged = [s for s in ranked if s.flagged]
    assert len(flagged) >= 10 and {s.index for s in flagged} <= set(flipped.tolist())
    assert all(s.confident_other == y_true[s.index] for s in flagged)
    # Flagged rows come first, then ascending margin.
    flags = [s.flagged for s in ranked]
    assert flags == sorted(flags, reverse=True)
    unflagged = [s.margin for s in ranked if not s.flagged]
    assert unflagged == sorted(unflagged)


def test_thresholds_are_mean_self_confidence_and_unlabelled_rows_are_skipped() -> None:
    proba = np.array([[0.9, 0.1], [0.7, 0.3], [0.2, 0.8], [0.5, 0.5]])
    y = np.array([0, 0, 1, -1])
    np.testing.assert_allclose(cleaning.class_thresholds(proba, y), [0.8, 0.8])
    ranked = cleaning.rank_suspicious(proba, y)
    assert [s.index for s in ranked] == [1, 2, 0]  # no flags; smallest margin first
    assert cleaning.uncertain_rows(proba, np.array([0, 1, 3]), 0.8).tolist() == [3, 1]


def test_unlabelled_rows_are_scored_but_never_trained_on() -> None:
    X, y = _separable(n_per_class=40)
    y_partial = y.copy()
    y_partial[::7] = cleaning.UNLABELLED
    fold = cleaning.fold_assignment([str(i) for i in range(len(y))], 4)
    synthetic = np.zeros(len(y), dtype=bool)
    synthetic[:5] = True  # in every training set, scored in-sample
    logits = cleaning.out_of_fold_logits(X, y_partial, LABELS, fold, always_train=synthetic)
    pred = logits.argmax(axis=1)
    assert (pred[::7] == y[::7]).mean() > 0.9
    assert np.all(np.isfinite(logits))


def _jpeg_copy(image: Image.Image, quality: int, size: tuple[int, int]) -> str:
    buffer = io.BytesIO()
    image.resize(size).save(buffer, format="JPEG", quality=quality)
    buffer.seek(0)
    with Image.open(buffer) as copy:
        return phash(copy.convert("RGB"))


def test_phash_groups_join_reencoded_copies_and_flag_conflicts() -> None:
    rng = np.random.default_rng(3)
    originals = []
    for _ in range(4):
        # Smooth random scenes: low frequencies dominate, like photos.
        small = rng.integers(0, 255, (6, 6, 3), dtype=np.uint8)
        originals.append(Image.fromarray(small).resize((160, 120), Image.Resampling.BICUBIC))
    hashes = [phash(im) for im in originals]
    hashes.append(_jpeg_copy(originals[0], 40, (200, 150)))  # row 4: copy of row 0
    hashes.append(_jpeg_copy(originals[2], 60, (120, 90)))  # row 5: copy of row 2

    groups = cleaning.phash_groups(hashes, max_distance=4)
    assert groups == [[0, 4], [2, 5]]
    assert all(hamming(hashes[g[0]], hashes[g[1]]) <= 4 for g in groups)

    labels = ["Dealer", "Stock", "Dealer", None, "Stock", None]
    dup = cleaning.duplicate_groups(hashes, labels, max_distance=4)
    assert [(g.members, g.conflicting) for g in dup] == [((0, 4), True), ((2, 5), False)]

    keys = [f"k{i}" for i in range(len(hashes))]
    group_of = cleaning.group_keys(len(keys), groups, keys)
    assert group_of == ["k0", "k1", "k2", "k3", "k0", "k2"]
    fold = cleaning.fold_assignment(group_of, 5)
    assert fold[0] == fold[4] and fold[2] == fold[5]

    holdout = np.array([False, False, False, False, True, False])
    assert cleaning.straddling_rows(groups, holdout).tolist() == [0]


def test_phash_groups_are_transitive_and_exact_at_zero() -> None:
    hashes = ["0000000000000000", "0000000000000003", "000000000000000f", "ffffffffffffffff"]
    assert cleaning.phash_groups(hashes, max_distance=2) == [[0, 1, 2]]
    assert cleaning.phash_groups(hashes, max_distance=0) == []
    assert cleaning.phash_groups(hashes + ["ffffffffffffffff"], max_distance=0) == [[3, 4]]


def test_class_balance_counts_and_splits() -> None:
    y = np.array([0, 0, 1, -1, 2, 0])
    split = np.array([True, False, False, False, True, False])
    report = cleaning.class_balance(y, LABELS, split)
    assert report["a"] == {"n": 3, "share": 0.5, "train": 2, "held_out": 1}
    assert report["c"]["held_out"] == 1 and report["(unlabelled)"]["n"] == 1
    assert "(unlabelled)" not in cleaning.class_balance(np.array([0, 1]), LABELS)
