"""Two bundled models on each source's held-out split of the all-sources build.

The held-out rows are those of ``cartag models build-bundled --sources ...``
(:mod:`cartag.training.datasets.all_sources`): vcr's are the shipped model's held-out photos
(neither model trained on them); vcor's and type-train's were never seen by the
all-sources build, and the shipped model saw no vcor or type-train image at all.
Both models must share a backbone (the heads are compared on the same embeddings).

Per source: type per-class recall and macro recall, Placeholder precision (every
real image called Placeholder that is not a labelled one is a false positive),
color top-1 and per-class recall; placeholder recall on the independent designs of
:mod:`cartag.training.datasets.placeholders_eval`; time per image of each model's heads.

Usage::

    .venv/bin/python -m benchmarks.bundled_all --data ../shared/data \\
        --new cartag-data/bundled-all [--json cartag-data/bundled-all-compare.json]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from cartag.imaging.keys import phash
from cartag.models.backbone import PREPROCESS_ID
from cartag.models.classifier import BUNDLED_DIR, EmbeddingClassifier
from cartag.models.color_features import FEATURE_ID, SIZE, color_features_batch
from cartag.training.datasets import all_sources
from cartag.training.datasets.dataset import file_loader
from cartag.training.datasets.embedding_cache import EmbeddingCache
from cartag.training.datasets.placeholders_eval import generate_eval_placeholders
from cartag.training.datasets.sources import read_sources
from cartag.training.fitting.metrics import classification_report
from cartag.vocab import COLORS, IMAGE_TYPES

PLACEHOLDER = IMAGE_TYPES.index("Placeholder")


def _f(v: float | None) -> str:
    return "—" if v is None else f"{v:.3f}"


def evaluate(
    model: EmbeddingClassifier,
    emb: np.ndarray,
    color_in: np.ndarray,
    sources: Sequence[str],
    y_type: np.ndarray,
    y_color: np.ndarray,
    eval_emb: np.ndarray,
) -> dict[str, Any]:
    """Held-out figures of one model per source (rows given are the held-out ones)."""
    src = np.asarray(sources)
    type_proba = model.type_head.predict_proba(emb)
    pred = type_proba.argmax(axis=1)
    colored = y_color >= 0
    color_proba = np.zeros((len(src), len(COLORS)))
    color_proba[colored] = model.color_head.predict_proba(color_in[colored])
    out: dict[str, Any] = {}
    for source in [*dict.fromkeys(sources), "all"]:
        mine = np.ones(len(src), bool) if source == "all" else src == source
        entry: dict[str, Any] = {"n": int(mine.sum())}
        typed = mine & (y_type >= 0)
        entry["image_type"] = classification_report(y_type[typed], type_proba[typed], IMAGE_TYPES)
        entry["placeholder"] = all_sources.placeholder_precision(
            y_type[mine], pred[mine], PLACEHOLDER, np.ones(int(mine.sum()), bool)
        )
        if (mine & colored).any():
            entry["color"] = classification_report(
                y_color[mine & colored], color_proba[mine & colored], COLORS
            )
        out[source] = entry
    out["placeholders_eval_recall"] = round(
        float((model.type_head.predict_proba(eval_emb).argmax(axis=1) == PLACEHOLDER).mean()), 4
    )
    return out


def head_time(model: EmbeddingClassifier, emb: np.ndarray, color_in: np.ndarray) -> float:
    """Microseconds per image of both heads, one image at a time (median of 3 passes)."""
    times = []
    for _ in range(3):
        started = time.perf_counter()
        for i in range(len(emb)):
            model.type_head.predict_proba(emb[i : i + 1])
            model.color_head.predict_proba(color_in[i : i + 1])
        times.append((time.perf_counter() - started) / len(emb) * 1e6)
    return round(float(np.median(times)), 1)


def markdown(results: dict[str, dict[str, Any]]) -> str:
    """One table per task: rows = source x model."""
    lines = [
        "| held-out set | model | n (type) | type macro recall | "
        + " | ".join(f"{t} recall" for t in IMAGE_TYPES)
        + " | Placeholder precision (TP / FP) | n (color) | color top-1 | lowest color |",
        "|---|---|---:|---:|" + "---:|" * len(IMAGE_TYPES) + "---|---:|---:|---|",
    ]
    first = next(iter(results.values()))
    for source in [k for k in first if k != "placeholders_eval_recall"]:
        for name, res in results.items():
            e = res[source]
            t, ph = e["image_type"], e["placeholder"]
            recalls = [t["per_class"].get(c, {}).get("recall") for c in IMAGE_TYPES]
            color = e.get("color")
            lowest = ""
            n_color, top1 = "", ""
            if color:
                rows = [
                    (r["recall"], c)
                    for c, r in color["per_class"].items()
                    if r["recall"] is not None
                ]
                low = min(rows)
                lowest = f"{low[1]} {low[0]:.3f}"
                n_color, top1 = str(color["n"]), _f(color["accuracy"])
            lines.append(
                f"| {source} | {name} | {t['n']} | {_f(t['macro_recall'])} | "
                + " | ".join(_f(v) for v in recalls)
                + f" | {_f(ph['precision'])} ({ph['tp']} / {ph['false_positives']}) | "
                f"{n_color} | {top1} | {lowest} |"
            )
    lines += ["", "**Color recall per class** (held-out)", ""]
    lines.append("| held-out set | model | " + " | ".join(COLORS) + " |")
    lines.append("|---|---|" + "---:|" * len(COLORS))
    for source in [k for k in first if k not in ("placeholders_eval_recall",)]:
        for name, res in results.items():
            color = res[source].get("color")
            if color:
                recalls = [color["per_class"].get(c, {}).get("recall") for c in COLORS]
                support = [color["per_class"].get(c, {}).get("support", 0) for c in COLORS]
                cells = [
                    f"{_f(r)} ({n})" if n else "—" for r, n in zip(recalls, support, strict=True)
                ]
                lines.append(f"| {source} | {name} | " + " | ".join(cells) + " |")
    lines += ["", "| model | placeholder recall, independent designs |", "|---|---:|"]
    for name, res in results.items():
        lines.append(f"| {name} | {_f(res['placeholders_eval_recall'])} |")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> None:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--data", type=Path, default=Path("../shared/data"))
    parser.add_argument("--new", type=Path, required=True, help="the all-sources model folder")
    parser.add_argument("--old", type=Path, default=BUNDLED_DIR, help="default: shipped")
    parser.add_argument("--cache-dir", type=Path, default=Path("cartag-data/cache"))
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    models = {
        "shipped": EmbeddingClassifier.from_dir(args.old),
        "all-sources": EmbeddingClassifier.from_dir(args.new),
    }
    backbone = models["shipped"].backbone
    if models["all-sources"].backbone.backbone_id != backbone.backbone_id:
        raise SystemExit("error: the two models have different backbones")
    rows = read_sources(args.data)
    files = [args.data / r.path for r in rows]
    hashes = [phash(file_loader(files)(i)) for i in range(len(files))]
    held = all_sources.source_holdout(rows, all_sources.type_train_folds(rows, hashes))
    idx = np.flatnonzero(held)
    rows = [rows[i] for i in idx]
    files = [files[i] for i in idx]
    content = [hashlib.sha256(f.read_bytes()).hexdigest() for f in files]
    cache = EmbeddingCache.in_folder(args.cache_dir, backbone.backbone_id, PREPROCESS_ID)
    emb = cache.get_or_compute(content, file_loader(files), backbone.embed_images)
    features = EmbeddingCache.in_folder(args.cache_dir, FEATURE_ID, f"to-rgb-bilinear-{SIZE}")
    feats = features.get_or_compute(content, file_loader(files), color_features_batch)
    color_in = np.concatenate([emb, feats], axis=1)
    y_type = np.asarray([IMAGE_TYPES.index(r.image_type) if r.image_type else -1 for r in rows])
    y_color = np.asarray([COLORS.index(r.color) if r.color else -1 for r in rows])
    sources = [r.source for r in rows]
    eval_set = generate_eval_placeholders(320, seed=0)
    eval_images: list[Image.Image] = [p.image for p in eval_set]
    eval_emb = backbone.embed_images(eval_images)
    results = {
        name: evaluate(m, emb, color_in, sources, y_type, y_color, eval_emb)
        for name, m in models.items()
    }
    timing = {name: head_time(m, emb[:300], color_in[:300]) for name, m in models.items()}
    print(markdown(results))
    print("\n| model | heads, µs per image (type + color, one image at a time) |\n|---|---:|")
    for name, us in timing.items():
        print(f"| {name} | {us} |")
    if args.json is not None:
        out = {
            "versions": {name: m.version for name, m in models.items()},
            "n_held_out": {s: sources.count(s) for s in dict.fromkeys(sources)},
            "results": results,
            "head_us_per_image": timing,
        }
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(out, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
