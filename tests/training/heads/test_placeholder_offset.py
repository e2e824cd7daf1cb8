"""The Placeholder logit offset: chosen on out-of-fold logits, within a recall budget."""

from __future__ import annotations

import numpy as np

from cartag.training.heads import placeholder_offset as po
from cartag.vocab import IMAGE_TYPES

DEALER, STOCK, PH = (IMAGE_TYPES.index(t) for t in ("Dealer", "Stock", "Placeholder"))


def _logits(rows: list[tuple[int, float]]) -> tuple[np.ndarray, np.ndarray]:
    """(N, 3) logits where each row's label wins (or loses to Placeholder) by a margin.

    Each row is (label, placeholder margin): the Placeholder logit minus the
    label's own logit (for a Placeholder row, its margin over Stock).
    """
    logits = np.zeros((len(rows), len(IMAGE_TYPES)))
    y = np.empty(len(rows), dtype=np.int64)
    for i, (label, margin) in enumerate(rows):
        y[i] = label
        other = STOCK if label == PH else label
        logits[i, other] = 1.0
        logits[i, PH] = 1.0 + margin
    return logits, y


def test_scores_count_false_positives_and_misses() -> None:
    logits, y = _logits([(PH, 2.0), (PH, 0.2), (STOCK, 0.6), (DEALER, -1.0)])
    assert po.placeholder_scores(logits, y, 0.0) == {
        "precision": round(2 / 3, 4),
        "recall": 1.0,
        "false_positives": 1,
        "missed": 0,
    }
    # Lowered by 0.75: the Stock row is no longer called Placeholder, the 0.2 one is missed.
    assert po.placeholder_scores(logits, y, 0.75) == {
        "precision": 1.0,
        "recall": 0.5,
        "false_positives": 0,
        "missed": 1,
    }


def test_smallest_offset_that_removes_the_false_positive_is_chosen() -> None:
    rows = [(PH, 3.0)] * 60 + [(STOCK, 0.6), (DEALER, -2.0)]
    logits, y = _logits(rows)
    offset, record = po.choose_offset(logits, y)
    assert offset == 0.75  # first grid step above the Stock row's 0.6 margin
    assert record["met_target"] is True
    assert record["out_of_fold"]["0.0"]["false_positives"] == 1
    assert record["out_of_fold"]["0.75"]["false_positives"] == 0


def test_recall_budget_caps_the_offset() -> None:
    # Removing the false positive (margin 2.0) would also miss 10 of 50 placeholders.
    rows = [(PH, 3.0)] * 40 + [(PH, 1.0)] * 10 + [(STOCK, 2.0)]
    logits, y = _logits(rows)
    offset, record = po.choose_offset(logits, y)
    assert record["met_target"] is False
    assert offset == 0.0
    assert record["out_of_fold"]["0.0"]["recall"] == 1.0


def test_synthetic_rows_do_not_inflate_precision_when_real_placeholders_exist() -> None:
    rows = [(PH, 3.0)] * 400 + [(PH, 3.0)] * 20 + [(STOCK, 0.3)]
    logits, y = _logits(rows)
    real = np.array([False] * 400 + [True] * 21)
    _, with_synthetic = po.choose_offset(logits, y)
    offset, real_only = po.choose_offset(logits, y, real)
    assert with_synthetic["offset"] == 0.0  # 400/401 already passes 0.995
    assert real_only["scored"] == "real images only"
    assert offset == 0.5


def test_a_fixed_offset_is_kept_and_still_scored() -> None:
    rows = [(PH, 3.0)] * 60 + [(STOCK, 0.6), (DEALER, -2.0)]
    logits, y = _logits(rows)
    offset, record = po.choose_offset(logits, y, fixed=1.1)  # off the grid too
    assert offset == record["offset"] == 1.1
    assert record["rule"].startswith("fixed by the caller")
    assert record["out_of_fold"]["1.1"]["false_positives"] == 0
    assert "0.75" in record["out_of_fold"]


def test_apply_offset_lowers_only_the_placeholder_bias() -> None:
    bias = np.array([0.1, 0.2, 0.3], dtype=np.float32)
    out = po.apply_offset(bias, 0.5)
    assert out.dtype == np.float32
    assert out[PH] == np.float32(bias[PH] - np.float32(0.5))
    assert bias[PH] == np.float32([0.1, 0.2, 0.3][PH])  # the input is not changed
    assert [out[i] for i in range(3) if i != PH] == [bias[i] for i in range(3) if i != PH]
