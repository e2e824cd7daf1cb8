"""The int8 gate of the model card: fp32 and int8 cross-source rows side by side."""

from __future__ import annotations

from typing import Any

from cartag.training.evaluation.card_int8 import GATE_TOLERANCE, gate_passes, gate_rows


def _row(protocol: str, test_set: str, accuracy: float, macro_recall: float) -> dict[str, Any]:
    return {
        "protocol": protocol,
        "test_set": test_set,
        "n": 100,
        "accuracy": accuracy,
        "macro_recall": macro_recall,
    }


FP32 = [
    _row("color: vcr -> vcor", "vcor", 0.825, 0.76),
    _row("type: leave-repo-out (5 folds)", "type-train", 0.97, 0.969),
]


def test_type_rows_are_judged_on_macro_recall_and_color_rows_on_top1() -> None:
    int8 = [
        _row("color: vcr -> vcor", "vcor", 0.822, 0.70),  # macro recall ignored for color
        _row("type: leave-repo-out (5 folds)", "type-train", 0.90, 0.967),  # accuracy ignored
    ]
    rows = gate_rows(FP32, int8)
    assert [(r["metric"], r["fp32"], r["int8"], r["diff"]) for r in rows] == [
        ("color top-1", 0.825, 0.822, -0.003),
        ("type macro recall", 0.969, 0.967, -0.002),
    ]
    assert gate_passes(rows)


def test_a_loss_beyond_the_tolerance_fails_and_a_gain_passes() -> None:
    worse = [_row("color: vcr -> vcor", "vcor", 0.825 - GATE_TOLERANCE - 0.001, 0.0)]
    better = [_row("color: vcr -> vcor", "vcor", 0.9, 0.0)]
    assert not gate_passes(gate_rows(FP32, worse))
    assert gate_passes(gate_rows(FP32, better))


def test_no_common_row_is_no_pass() -> None:
    assert gate_rows(FP32, [_row("color: both 80/20", "all", 0.9, 0.9)]) == []
    assert not gate_passes([])
