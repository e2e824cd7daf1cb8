"""Model-card sections of a build on several sources (``--sources``).

A build on every shared source is judged by LABELS.md and by sources it never
saw, so its card says how the labels were reviewed, how the Placeholder bar was
set, what the cross-source evaluation measured (``cross_source.json`` beside the
weights, written by ``benchmarks/cross_source.py --card``) and what is still weak.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Final

CROSS_SOURCE_NAME: Final[str] = "cross_source.json"
# The same protocols on the int8 backbone's embeddings (heads refitted on them).
CROSS_SOURCE_INT8_NAME: Final[str] = "cross_source_int8.json"


def fmt(value: object) -> str:
    """A card figure: floats to 3 decimals, None as ``-``."""
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.3f}"
    return str(value)


def label_section(training: dict[str, Any]) -> list[str]:
    """How the labels of every source were reviewed (counts from config.json)."""
    review = training.get("label_review")
    if not review:
        return []
    changed = ", ".join(
        f"{k.split(':', 1)[1]} {v}"
        for k, v in review.items()
        if not k.endswith(":reviewed") and k.startswith("color:")
    )
    vcor_types = sum(v for k, v in review.items() if k.startswith("type:") and "->" in k)
    return [
        "## Labels (LABELS.md)",
        "",
        "Every label follows `LABELS.md`; the folders' own labels were reviewed against it by "
        "looking at the photos (statistics only ordered the candidates, no model answer was "
        "used):",
        "",
        "- vcr types: `cartag/training/datasets/type_labels.csv` (the review in its "
        "`note` column).",
        f"- vcor types (it has none of its own): {review.get('type:reviewed', 0)} photos looked "
        f"at, {vcor_types} cut-outs on white made Stock, the rest of vcor is Dealer "
        "(`relabels.csv`).",
        f"- Colors: {review.get('color:reviewed', 0)} photos looked at (`relabels.csv`), "
        f"changed: {changed or 'none'}.",
        "",
    ]


def offset_line(type_metrics: dict[str, Any]) -> list[str]:
    """The Placeholder logit offset and the out-of-fold figures that chose it."""
    record = type_metrics.get("placeholder_offset")
    if not record:
        return []
    table = record["out_of_fold"]
    before, after = table[repr(0.0)], table[repr(record["offset"])]
    return [
        f"- Placeholder bar: the Placeholder logit is lowered by {record['offset']} "
        "(`cartag.training.heads.placeholder_offset`, chosen on out-of-fold logits of "
        "the training "
        f"split, {record['scored']}): out-of-fold Placeholder precision "
        f"{before['precision']:.3f} -> {after['precision']:.3f}, recall "
        f"{before['recall']:.3f} -> {after['recall']:.3f}.",
    ]


def read_cross_source(model_dir: Path, name: str = CROSS_SOURCE_NAME) -> dict[str, Any] | None:
    """The cross-source summary ``name`` beside the weights, or None."""
    path = model_dir / name
    if not path.is_file():
        return None
    data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return data


def cross_source_section(summary: dict[str, Any] | None) -> list[str]:
    """A table of the cross-source protocols (heads refitted without the test source)."""
    if not summary:
        return []
    lines = [
        "## Cross-source figures",
        "",
        "Heads refitted with this build's recipe and hyper-parameters on some sources and "
        f"scored on a source they never saw (`{summary['command']}`; protocol: "
        "`cartag.training.evaluation.cross_source`). These, not the random split above, "
        "are the figures "
        "to judge the model by.",
        "",
        "| protocol | test set | n | accuracy | macro recall | lowest recall | "
        "Placeholder precision | targets |",
        "|---|---|---:|---:|---:|---|---:|---|",
    ]
    for row in summary["rows"]:
        lines.append(
            f"| {row['protocol']} | {row['test_set']} | {row['n']} | {fmt(row['accuracy'])} | "
            f"{fmt(row['macro_recall'])} | {row['lowest']} | {fmt(row['placeholder_precision'])} "
            f"| {row['targets']} |"
        )
    return [*lines, ""]


def limitations(summary: dict[str, Any] | None, real_colors: dict[str, int]) -> list[str]:
    """Known weaknesses of a build on every source."""
    rare = ", ".join(f"{c} {n}" for c, n in real_colors.items() if n < 100)
    lines = [
        "- Colors are drawn differently by the two color sets: vcor-train has almost no Grey "
        "(its silver/grey cars sit in other folders), so a head fitted on one set and scored "
        "on the other loses Grey; the figures above show it.",
        f"- Rare colors rest on few real photos ({rare or 'none'} training photos), so their "
        "held-out recall is measured on a handful.",
        "- Placeholders: type-train's real placeholders and logos come from about 80 sites; "
        "a design family absent from them (e.g. full-bleed noise or watermark cards) is "
        "recalled less well (see the independent designs above).",
        "- Dealer/Stock borderline cases (white-ish showroom floors, cut-outs with a shadow or "
        "a partial backdrop) are judgement calls under LABELS.md and make up most Dealer/Stock "
        "confusions.",
    ]
    if summary and any(r["targets"] == "not met" for r in summary["rows"]):
        lines.append(
            "- Not every cross-source target is met (table above): see `benchmarks/RESULTS.md` "
            "for the remaining errors grouped by cause."
        )
    return lines
