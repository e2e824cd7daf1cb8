"""The cross-source protocol on synthetic rows: who trains, who tests, how results pool."""

from __future__ import annotations

import numpy as np
import pytest

from cartag.training.datasets.dataset import holdout_mask
from cartag.training.evaluation import cross_source as cs
from cartag.vocab import COLORS, IMAGE_TYPES

PLACEHOLDER = IMAGE_TYPES.index("Placeholder")


def make_rows() -> tuple[list[str], list[str], np.ndarray, np.ndarray, np.ndarray]:
    """40 vcr, 30 vcor, 12 type-train (4 repos' folds) and 6 placeholder rows.

    Returns:
        keys, sources, color index (-1 none), type index (-1 none), type-train fold (-1 none).
    """
    keys, sources, color, kind, fold = [], [], [], [], []
    for i in range(40):
        keys.append(f"vcr-train/c{i % 4}/{i}.jpg")
        sources.append("vcr")
        color.append(i % 4)
        kind.append(i % 2)
        fold.append(-1)
    for i in range(30):
        keys.append(f"vcor-train/{i}.jpg")
        sources.append("vcor")
        color.append(4 + i % 3)
        kind.append(-1)
        fold.append(-1)
    for i in range(12):
        keys.append(f"type-train/{i}.jpg")
        sources.append("type-train")
        color.append(-1)
        kind.append(i % 3)
        fold.append(i % 4)
    for i in range(6):
        keys.append(f"placeholder/0/{i}")
        sources.append(cs.PLACEHOLDER)
        color.append(-1)
        kind.append(PLACEHOLDER)
        fold.append(-1)
    as_array = [np.asarray(v, dtype=np.int64) for v in (color, kind, fold)]
    return keys, sources, as_array[0], as_array[1], as_array[2]


def test_vcr_keeps_the_bundled_held_out_rows() -> None:
    keys, sources, color, _, _ = make_rows()

    holdout = cs.holdout_by_source(keys, sources, color)

    vcr = [i for i, s in enumerate(sources) if s == "vcr"]
    alone = holdout_mask([keys[i] for i in vcr], [COLORS[color[i]] for i in vcr])
    assert np.array_equal(holdout[vcr], alone)
    vcor = np.asarray(sources) == "vcor"
    assert holdout[vcor].sum() == 6  # round(0.2 * 10) in each of three colors


def test_color_splits_hold_whole_sources_out() -> None:
    keys, sources, color, _, _ = make_rows()
    holdout = cs.holdout_by_source(keys, sources, color)
    src = np.asarray(sources)

    to_vcor, to_vcr, both = cs.color_splits(sources, color, holdout)

    assert set(src[to_vcor.train]) == {"vcr"} and len(to_vcor.train) == 40
    assert set(src[to_vcor.test]) == {"vcor"} and len(to_vcor.test) == 30
    assert set(src[to_vcr.train]) == {"vcor"}
    assert set(src[to_vcr.test]) == {"vcr"} and holdout[to_vcr.test].all()
    assert len(to_vcr.test) == 8  # only vcr's held-out 20%: the backbone saw the rest
    assert not set(both.train) & set(both.test)
    assert len(both.train) + len(both.test) == 70 and set(src[both.test]) == {"vcr", "vcor"}


def test_type_splits_test_every_type_train_row_once_with_its_fold_unseen() -> None:
    _, sources, _, kind, fold = make_rows()
    src = np.asarray(sources)

    first, *folds = cs.type_splits(sources, kind, fold)

    assert set(src[first.train]) == {"vcr", cs.PLACEHOLDER} and len(first.train) == 46
    assert set(src[first.test]) == {"type-train"} and len(first.test) == 12
    assert [s.name for s in folds] == [f"type: leave-repo-out fold {k}" for k in range(4)]
    tested = np.concatenate([s.test for s in folds])
    assert sorted(tested.tolist()) == sorted(first.test.tolist())
    for k, split in enumerate(folds):
        assert (fold[split.test] == k).all()
        assert not (fold[split.train] == k).any()
        assert "vcor" not in set(src[split.train])  # no type labels
        assert len(split.train) == 46 + 9


def test_type_splits_of_the_all_sources_recipe_train_on_vcr_and_vcor_training_rows() -> None:
    keys, sources, _, kind, fold = make_rows()
    src = np.asarray(sources)
    kind[src == "vcor"] = IMAGE_TYPES.index("Dealer")  # reviewed, else Dealer
    held = np.arange(len(keys)) % 5 == 0
    base = np.isin(src, ["vcr", "vcor", cs.PLACEHOLDER, "type-train"]) & ~held

    first, *folds = cs.type_splits(sources, kind, fold, base, "vcr+vcor")

    assert first.name == "type: vcr+vcor -> type-train"
    assert set(src[first.train]) == {"vcr", "vcor", cs.PLACEHOLDER}
    assert not held[first.train].any() and len(first.train) == int(
        (~held[:70]).sum() + (~held[82:]).sum()
    )
    for k, split in enumerate(folds):
        # type-train rows of the other folds train, whatever the base mask says.
        assert sorted(split.train[src[split.train] == "type-train"].tolist()) == sorted(
            np.flatnonzero((src == "type-train") & (fold != k)).tolist()
        )


def test_pool_orders_out_of_fold_predictions_and_refuses_overlap() -> None:
    a = (np.array([5, 1]), np.array([[0.9, 0.1], [0.2, 0.8]]))
    b = (np.array([3]), np.array([[0.5, 0.5]]))

    rows, proba = cs.pool([a, b])

    assert rows.tolist() == [1, 3, 5]
    assert proba.tolist() == [[0.2, 0.8], [0.5, 0.5], [0.9, 0.1]]
    with pytest.raises(ValueError, match="tested twice"):
        cs.pool([a, (np.array([1]), np.array([[1.0, 0.0]]))])


def test_placeholder_stats_count_real_photos_as_false_positives() -> None:
    y = np.array([PLACEHOLDER, PLACEHOLDER, 0, 1, PLACEHOLDER])
    pred = np.array([PLACEHOLDER, 0, PLACEHOLDER, 1, PLACEHOLDER])
    real = np.array([0, PLACEHOLDER, 1, 0])

    stats = cs.placeholder_stats(y, pred, PLACEHOLDER, real)

    assert stats == {
        "precision": round(2 / 3, 4),
        "recall": round(2 / 3, 4),
        "false_positives": 1,
        "n_real": 4,
        "real_called_placeholder": 1,
        "precision_with_real": 0.5,
    }
    nothing = cs.placeholder_stats(np.array([0]), np.array([0]), PLACEHOLDER)
    assert nothing == {"precision": None, "recall": None, "false_positives": 0}


def test_coverage_names_what_a_direction_cannot_measure() -> None:
    labels = ("Black", "Grey", "Orange", "Burgundy")
    y_train = np.array([0, 0, 1, 1])
    y_test = np.array([0] * 140 + [2] * 5)

    got = cs.coverage(y_train, y_test, labels, made=["Burgundy"])

    assert got == {
        "untestable": ["Grey", "Burgundy"],
        "low_support": {"Orange": 5},
        "untrained": ["Orange"],
        "synthetic_only": ["Burgundy"],
    }


def test_targets_ignore_low_support_colors_but_not_weak_ones() -> None:
    y = np.array([0] * 50 + [1] * 40 + [2] * 3)
    proba = np.eye(3)[np.r_[[0] * 50, [1] * 31 + [0] * 9, [0] * 3]]
    report = cs.score(y, proba, ["s"] * len(y), ["a", "b", "c"])["overall"]

    checks = cs.check_targets("color", report)

    # c (3 images, recall 0) is not checked; b's 0.775 fails the 0.80 floor.
    assert checks["checks"]["color_min_recall"]["value"] == 0.775
    assert checks["checks"]["color_accuracy"]["met"] is False and checks["met"] is False
    typed = cs.check_targets("image_type", {"macro_recall": 0.97}, precision=0.996)
    assert typed["met"] is True
    assert cs.check_targets("image_type", {"macro_recall": 0.97}, precision=None)["met"] is False


def test_markdown_shows_every_test_set_and_what_cannot_be_measured() -> None:
    y = np.array([0, 0, 1, 1])
    proba = np.eye(len(COLORS))[[0, 1, 1, 1]]
    scored = cs.score(y, proba, ["vcr", "vcr", "vcor", "vcor"], COLORS)
    result = {
        "name": "color: both 80/20",
        "task": "color",
        **scored,
        "targets": cs.check_targets("color", scored["overall"]),
        "coverage": {"vcr": cs.coverage(y, y, COLORS, made=["Burgundy"])},
    }

    text = cs.markdown([result])

    assert "| color: both 80/20 | vcr | 2 | 0.500 | 0.500 | Black 0.500 |  | not met |" in text
    assert "| color: both 80/20 | all | 4 | 0.750 | 0.750 | Black 0.500 |  | not met |" in text
    assert "| color: both 80/20 | vcr | Brown, Burgundy, Green," in text  # no test image
    assert "| Black (2), Blue (2) |" in text  # few test images
    assert "| Burgundy |\n" in text  # recolored only
    assert "| Black | 1 | 1 |" in text  # vcr's confusion row


def test_type_result_judges_placeholder_precision_with_real_photos() -> None:
    y = np.array([0, 1, PLACEHOLDER, PLACEHOLDER])
    proba = np.eye(3)[[0, 1, PLACEHOLDER, PLACEHOLDER]]
    clean = np.zeros(300, dtype=np.int64)
    one_wrong = clean.copy()
    one_wrong[7] = PLACEHOLDER

    perfect = cs.type_result("t", y, proba, ["type-train"] * 4, clean)
    spoiled = cs.type_result("t", y, proba, ["type-train"] * 4, one_wrong)

    assert perfect["targets"]["met"] is True
    assert spoiled["placeholder"]["precision"] == 1.0  # the labelled rows alone
    assert spoiled["placeholder"]["precision_with_real"] == round(2 / 3, 4)
    assert spoiled["targets"]["checks"]["placeholder_precision"]["met"] is False
    assert list(spoiled["by_source"]) == ["type-train"]
