"""Model-card section of the int8 backbone: calibration, the gate, the switch.

A build with an int8 backbone (:mod:`cartag.training.bundled.quantization`) ships it
only if, on the cross-source protocols, its refitted heads lose at most
:data:`GATE_TOLERANCE` of type macro recall and of color top-1 against the float
ones (``cross_source.json`` and ``cross_source_int8.json``, written by
``benchmarks/cross_source.py --card [--precision int8]``).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from cartag.training.evaluation.card_sources import (
    CROSS_SOURCE_INT8_NAME,
    fmt,
    read_cross_source,
)
from cartag.training.fitting.quantization import GATE_TOLERANCE


def gate_rows(
    fp32: Sequence[dict[str, Any]], int8: Sequence[dict[str, Any]]
) -> list[dict[str, Any]]:
    """Pair the float and int8 rows of the cross-source summaries.

    Type protocols are judged on macro recall, color protocols on top-1 accuracy.

    Args:
        fp32: Rows of ``cross_source.json`` (protocol, test_set, n, accuracy, macro_recall).
        int8: Rows of ``cross_source_int8.json``.

    Returns:
        One dict per row present in both: ``protocol``, ``test_set``, ``n``, ``metric``,
        ``fp32``, ``int8``, ``diff`` (int8 - fp32) and ``within`` (diff >= -tolerance).
    """
    theirs = {(r["protocol"], r["test_set"]): r for r in int8}
    out = []
    for row in fp32:
        other = theirs.get((row["protocol"], row["test_set"]))
        if other is None:
            continue
        metric = "macro_recall" if row["protocol"].startswith("type") else "accuracy"
        diff = round(other[metric] - row[metric], 4)
        out.append(
            {
                "protocol": row["protocol"],
                "test_set": row["test_set"],
                "n": row["n"],
                "metric": "type macro recall" if metric == "macro_recall" else "color top-1",
                "fp32": row[metric],
                "int8": other[metric],
                "diff": diff,
                "within": diff >= -GATE_TOLERANCE,
            }
        )
    return out


def gate_passes(rows: Sequence[dict[str, Any]]) -> bool:
    """Whether every row of :func:`gate_rows` is within the tolerance (and there is one)."""
    return bool(rows) and all(r["within"] for r in rows)


def _read(path: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return data


def int8_section(model_dir: Path, config: dict[str, Any], default: str) -> list[str]:
    """The card's "int8 backbone" section, or nothing for a folder without one.

    Args:
        model_dir: The model folder.
        config: Its config.json.
        default: The service's default precision (``Settings.precision``).
    """
    block = config.get("int8")
    if not block:
        return []
    ranges = _read(model_dir / str(block["quantization"]))
    cal, options = ranges["calibration"], ranges["options"]
    by_source = ", ".join(f"{s} {n}" for s, n in cal.get("photos_by_source", {}).items())
    heads = {t: _read(model_dir / f"{n}.json") for t, n in block["heads"].items()}
    fp32_heads = {t: _read(model_dir / f"{n}.json") for t, n in config["heads"].items()}
    type_fit, color_fit = heads["image_type"]["fit"], heads["color"]["fit"]
    offset = heads["image_type"].get("placeholder_logit_offset")
    floats = ", ".join(options["exclude_nodes"])
    lines = [
        "## int8 backbone",
        "",
        f"- Backbone `{block['backbone_id']}`: the network above quantized by ONNX Runtime "
        f"{cal.get('onnxruntime', '?')} ({cal.get('format', 'QDQ')}, "
        f"{options['weights']} weights {'per channel' if options['per_channel'] else ''}, "
        f"{options['activations']} activations"
        f"{', reduced range' if options['reduce_range'] else ''}"
        f"{_pair_note(options.get('pair_limit', 0))}"
        f"{', left in float: ' + floats if floats else ''}"
        f"), activation ranges in `{block['quantization']}` (sha256 `{ranges['sha256'][:16]}...`).",
        f"- Calibration: {cal.get('method')} over {cal.get('photos')} photos ({by_source}); "
        f"{cal.get('chosen', '')}.",
        f"- Heads `{block['heads']['image_type']}` and `{block['heads']['color']}`: the float "
        "heads' recipe with the hyper-parameters their fit chose (type l2 "
        f"{type_fit['l2']}, Placeholder offset {offset}"
        f"; color l2 {color_fit['l2']}, {color_fit['mlp']['epochs']} epochs), on the int8 "
        "embeddings (held-out type macro recall "
        f"{fmt(heads['image_type']['metrics']['held_out']['macro_recall'])}, fp32 "
        f"{fmt(fp32_heads['image_type']['metrics']['held_out']['macro_recall'])}; color top-1 "
        f"{fmt(heads['color']['metrics']['held_out']['accuracy'])}, fp32 "
        f"{fmt(fp32_heads['color']['metrics']['held_out']['accuracy'])}).",
        f"- Switch: `CARTAG_PRECISION=int8` or `fp32` (default here: {default}); int8 runs on "
        "the onnx engine only. The service quantizes the exported network with the shipped "
        "ranges on first use and caches it (`<data_dir>/cache/onnx/`).",
        "",
    ]
    fp32 = read_cross_source(model_dir)
    int8 = read_cross_source(model_dir, CROSS_SOURCE_INT8_NAME)
    if not fp32 or not int8:
        return [*lines, "Cross-source figures of the int8 heads: not measured.", ""]
    rows = gate_rows(fp32["rows"], int8["rows"])
    verdict = "passed" if gate_passes(rows) else "failed"
    lines += [
        f"Cross-source gate (int8 may lose at most {GATE_TOLERANCE} on every row; "
        f"`{int8['command']}`): **{verdict}**. The same rows also chose the calibration "
        'among the variants tried (`benchmarks/RESULTS.md`, "Int8 backbone (issue 18)"), '
        "so the pass is slightly optimistic; every difference is a few photos.",
        "",
        "| protocol | test set | n | metric | fp32 | int8 | int8 - fp32 |",
        "|---|---|---:|---|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['protocol']} | {r['test_set']} | {r['n']} | {r['metric']} | {fmt(r['fp32'])} "
            f"| {fmt(r['int8'])} | {r['diff']:+.4f} |"
        )
    return [*lines, ""]


def _pair_note(limit: int) -> str:
    if not limit:
        return ""
    return (
        f", neighbouring weights summing to at most {limit} so that CPUs without VNNI "
        "compute the same integers (`cartag.models.pair_bound`)"
    )
