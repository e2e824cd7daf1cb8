"""A stricter bar for calling an image Placeholder, chosen on out-of-fold logits.

Calling a real vehicle photo Placeholder hides a listing's photo; missing a
placeholder only shows a "photo coming soon" card as a photo. The two errors
do not cost the same, so the image-type head may lower its Placeholder logit
by a constant offset: the smallest offset whose out-of-fold Placeholder
precision reaches :data:`TARGET_PRECISION` while the out-of-fold Placeholder
recall loses at most :data:`MAX_RECALL_LOSS`. Subtracting the offset from the
head's bias changes nothing at serving time but the decision, and it is chosen
on the training split's out-of-fold logits only (never on held-out data).
"""

from __future__ import annotations

from typing import Any, Final

import numpy as np

from cartag.training.datasets.all_sources import placeholder_precision
from cartag.vocab import IMAGE_TYPES

PLACEHOLDER: Final[int] = IMAGE_TYPES.index("Placeholder")
OFFSET_GRID: Final[tuple[float, ...]] = tuple(round(0.25 * i, 2) for i in range(25))
TARGET_PRECISION: Final[float] = 0.995
MAX_RECALL_LOSS: Final[float] = 0.02


def placeholder_scores(logits: np.ndarray, y: np.ndarray, offset: float) -> dict[str, float]:
    """Placeholder precision and recall when its logit is lowered by ``offset``.

    Args:
        logits: (N, K) logits (any temperature: the offset is in raw logit units).
        y: (N,) label indices, -1 = unlabelled (scored as not Placeholder).
        offset: Subtracted from the Placeholder column.

    Returns:
        ``precision``, ``recall``, ``false_positives`` and ``missed``.
    """
    pred = apply_offset(logits, offset).argmax(axis=1)
    # Every row called Placeholder that is not one is a false positive (all rows count as real).
    stats = placeholder_precision(y, pred, PLACEHOLDER, np.ones(len(y), dtype=bool))
    return {
        "precision": stats["precision"] or 0.0,
        "recall": stats["recall"] or 0.0,
        "false_positives": stats["false_positives"],
        "missed": int(((y == PLACEHOLDER) & (pred != PLACEHOLDER)).sum()),
    }


def choose_offset(
    oof_logits: np.ndarray,
    y: np.ndarray,
    real: np.ndarray | None = None,
    fixed: float | None = None,
) -> tuple[float, dict[str, Any]]:
    """The smallest grid offset that meets the precision target within the recall budget.

    Where no offset in the budget meets the target, the one of highest precision
    inside the budget (ties: the smaller offset).

    Args:
        oof_logits: (N, K) out-of-fold logits of the training split.
        y: (N,) label indices of those rows.
        real: Optional bool (N,): rows that are real images. When some real rows
            are labelled Placeholder, only real rows are scored: synthetic
            placeholders are easy and would inflate precision and recall.
        fixed: Take this offset instead of choosing (the table is still scored):
            heads refitted on other embeddings of the same model keep its offset.

    Returns:
        The offset and a record (rule, table of every offset tried, the choice).
    """
    scored = "all rows"
    if real is not None and bool((np.asarray(real) & (y == PLACEHOLDER)).any()):
        oof_logits, y = oof_logits[real], y[real]
        scored = "real images only"
    grid = sorted({*OFFSET_GRID, *([] if fixed is None else [fixed])})
    table = {repr(o): placeholder_scores(oof_logits, y, o) for o in grid}
    base_recall = table[repr(OFFSET_GRID[0])]["recall"]
    allowed = [o for o in OFFSET_GRID if table[repr(o)]["recall"] >= base_recall - MAX_RECALL_LOSS]
    meeting = [o for o in allowed if table[repr(o)]["precision"] >= TARGET_PRECISION]
    if fixed is not None:
        chosen = fixed
    elif meeting:
        chosen = meeting[0]
    else:
        chosen = max(allowed, key=lambda o: (table[repr(o)]["precision"], -o))
    rule = (
        f"smallest offset with out-of-fold Placeholder precision >= {TARGET_PRECISION} "
        f"losing <= {MAX_RECALL_LOSS} recall (else the most precise within that loss); "
        "subtracted from the Placeholder bias (cartag.training.heads.placeholder_offset)"
    )
    if fixed is not None:
        rule = f"fixed by the caller (the float heads' offset); the rule otherwise: {rule}"
    record = {
        "rule": rule,
        "scored": scored,
        "offset": chosen,
        "met_target": bool(meeting),
        "out_of_fold": table,
    }
    return chosen, record


def apply_offset(values: np.ndarray, offset: float) -> np.ndarray:
    """A copy of (..., K) logits or a (K,) bias with the Placeholder entry lowered by ``offset``.

    The dtype is kept (float32 for a head's bias, float64 for out-of-fold logits).
    """
    out = np.array(values, copy=True)
    out[..., PLACEHOLDER] -= offset
    return out
