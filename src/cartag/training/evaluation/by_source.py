"""Per-source figures of an evaluation (``cartag evaluate`` with a ``source`` column).

A model that looks good on a random split of one website dump can fail on
another; a labels CSV that says where each image came from (``source``:
``vcr``, ``vcor``, ``type-train``, an advertiser...) gets, besides the overall
figures, one :func:`cartag.training.fitting.metrics.classification_report` per task and
source: n, accuracy, macro recall, per-class precision/recall and the confusion
matrix. This module computes them and renders them for the terminal.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Final

import numpy as np
from rich import box
from rich.console import Group
from rich.table import Table

from cartag.training.fitting.metrics import classification_report

# Shown for rows whose source cell is empty, so they still count somewhere.
NO_SOURCE: Final[str] = "(no source)"

# source -> task -> classification report
BySource = dict[str, dict[str, dict[str, Any]]]
# Confusion-matrix column headers: a 12-color matrix then fits 80 columns.
SHORT: Final[dict[str, str]] = {
    "Black": "Blk", "Blue": "Blu", "Brown": "Brn", "Burgundy": "Bur", "Green": "Grn",
    "Grey": "Gry", "Orange": "Org", "Pink": "Pnk", "Purple": "Pur", "White": "Wht",
    "Yellow": "Ylw", "Placeholder": "Plc",
}  # fmt: skip


def reports_by_source(
    y_true: np.ndarray, proba: np.ndarray, sources: Sequence[str], labels: Sequence[str]
) -> dict[str, dict[str, Any]]:
    """One classification report per source.

    Args:
        y_true: (N,) int labels.
        proba: (N, K) scores.
        sources: N source names.
        labels: K class names.

    Returns:
        Source name -> report, sources sorted by name.
    """
    names = np.asarray([s or NO_SOURCE for s in sources])
    return {
        str(source): classification_report(y_true[names == source], proba[names == source], labels)
        for source in sorted(set(names.tolist()))
    }


def by_source(per_task: Mapping[str, Mapping[str, dict[str, Any]]]) -> BySource:
    """Turn task -> source -> report into source -> task -> report (sources sorted)."""
    out: BySource = {}
    for task, reports in per_task.items():
        for source, report in reports.items():
            out.setdefault(source, {})[task] = report
    return dict(sorted(out.items()))


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def summary_table(task: str, sources: BySource) -> Table:
    """Sources as rows: n, accuracy, macro recall.

    Args:
        task: ``image_type`` or ``color``.
        sources: :func:`by_source` output.
    """
    table = Table("source", "n", "accuracy", "macro recall", title=f"{task} by source")
    for name, tasks in sources.items():
        if task in tasks:
            r = tasks[task]
            table.add_row(name, str(r["n"]), _fmt(r["accuracy"]), _fmt(r["macro_recall"]))
    return table


def recall_table(task: str, sources: BySource) -> Table:
    """Classes as rows, sources as columns: recall ("-" where a source has none of a class).

    Transposed so that twelve colors fit an 80-column terminal.
    """
    reports = {name: tasks[task] for name, tasks in sources.items() if task in tasks}
    classes = list(dict.fromkeys(c for r in reports.values() for c in r["per_class"]))
    table = Table("class", title=f"{task} recall by source")
    for name in reports:
        table.add_column(name, justify="right")
    for label in classes:
        recalls = [r["per_class"].get(label, {}).get("recall") for r in reports.values()]
        table.add_row(label, *(_fmt(value) for value in recalls))
    return table


def confusion_table(task: str, source: str, report: Mapping[str, Any]) -> Table:
    """One source's confusion matrix (rows true, columns predicted, abbreviated)."""
    names = report["confusion"]["labels"]
    table = Table(
        title=f"{task} · {source} confusion (rows true, columns predicted)",
        box=box.SIMPLE_HEAD,  # its column separators are the only padding
        padding=0,
    )
    table.add_column("true", no_wrap=True, min_width=max(len(n) for n in names))
    for label in names:
        table.add_column(SHORT.get(label, label), justify="right")
    for label, counts in zip(names, report["confusion"]["rows_true_cols_pred"], strict=True):
        table.add_row(label, *(str(c) if c else "." for c in counts))
    return table


def source_tables(sources: BySource) -> Group:
    """Everything per source for the terminal: a summary per task, then the matrices."""
    tasks = list(dict.fromkeys(task for reports in sources.values() for task in reports))
    parts: list[Table] = []
    for task in tasks:
        parts.append(summary_table(task, sources))
        parts.append(recall_table(task, sources))
        for name, reports in sources.items():
            if task in reports:
                parts.append(confusion_table(task, name, reports[task]))
    return Group(*parts)
