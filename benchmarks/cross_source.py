"""Cross-source evaluation of the bundled recipe on the shipped backbone's frozen embeddings.

Heads are refitted with the bundled recipe (:mod:`cartag.training.bundled.build`: type =
balanced linear head + generated placeholders; color = linear + color-feature MLPs,
recolored photos for target colors the training rows lack) and scored on sources
they never saw (protocol: :mod:`cartag.training.evaluation.cross_source`):

- color: fit vcr -> test vcor; fit vcor -> test vcr (its held-out 20%: the shipped
  backbone was fine-tuned on the rest); fit both on a random 80% -> test the 20% of each;
- type: fit vcr + placeholders -> test type-train; leave-one-repo-group-out over
  type-train (5 folds, repositories sharing near-duplicates merged) with vcr in training;
  vcor (real photos, none a placeholder) counts every photo called Placeholder;
- the shipped model as is (no refit) on every source.

Hyper-parameters are the shipped heads' (chosen by CV on vcr's training split);
``--select`` chooses them again by CV inside each training set (several times slower).
Embeddings and color features are cached under ``--cache-dir`` (keyed by file hash,
shared with ``cartag.training.bundled.build``), so only the first run embeds the ~7.7k images.

Usage::

    .venv/bin/python -m benchmarks.cross_source --data ../shared/data \\
        [--cache-dir cartag-data/cache] [--json cartag-data/cross_source.json] [--select] \\
        [--type-labels src/cartag/training/datasets/type_labels.csv]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from cartag.imaging.keys import phash
from cartag.imaging.placeholders import generate_placeholders
from cartag.models.backbone import PREPROCESS_ID, Backbone
from cartag.models.classifier import BUNDLED_DIR, EmbeddingClassifier, backbone_spec
from cartag.models.color_features import FEATURE_DIM, FEATURE_ID, SIZE, color_features_batch
from cartag.models.engine import EngineName
from cartag.models.folder import int8_config, read_config
from cartag.models.heads import load_head
from cartag.training.datasets import all_sources
from cartag.training.datasets.dataset import holdout_mask, image_key, split_key
from cartag.training.datasets.embedding_cache import EmbeddingCache
from cartag.training.datasets.relabels import RELABELS_PATH
from cartag.training.datasets.sources import (
    TYPE_TRAIN,
    VCOR,
    VCR,
    SourceRow,
    leave_group_out_folds,
    read_sources,
)
from cartag.training.datasets.type_labels import TYPE_LABELS_PATH
from cartag.training.evaluation import cross_source as cs
from cartag.training.evaluation.card import render_card
from cartag.training.evaluation.card_sources import CROSS_SOURCE_INT8_NAME, CROSS_SOURCE_NAME
from cartag.training.fitting.fit import fit_linear_head, select_l2
from cartag.training.fitting.metrics import classification_report
from cartag.training.heads.color import fit_color_head, select_color_head
from cartag.training.heads.placeholder_offset import apply_offset
from cartag.training.heads.recolor import RECOLORED_PER_COLOR, missing_targets, synthesize
from cartag.training.heads.type_head import L2_GRID as TYPE_L2_GRID
from cartag.vocab import COLORS, IMAGE_TYPES

# Repositories sharing an image within this pHash distance share a fold. Tighter
# than the type head's 6 for vcr photos: type-train is mostly graphics and cut-outs
# on white, whose pHashes are alike; at 4 a logo already links to car renders.
DUPLICATE_MAX_DISTANCE = all_sources.MAX_DISTANCE
PLACEHOLDER = IMAGE_TYPES.index("Placeholder")


@dataclass
class Inputs:
    """Everything embedded once.

    Attributes:
        rows: The labelled table (:func:`cartag.training.datasets.sources.read_sources`).
        files: N absolute image files.
        emb: float32 (N, D) shipped-backbone embeddings.
        features: float32 (N, F) color features (zeros where a row has no color label).
        placeholders: float32 (P, D) embeddings of the bundled recipe's placeholders.
        placeholder_ids: P placeholder ids.
        families: P placeholder design families.
        backbone: The shipped backbone (to embed recolored photos).
        shipped: The shipped classifier (its heads are scored as they are); None with
            ranges to try (``--quantization``).
        cache: The embedding cache of that backbone.
    """

    rows: list[SourceRow]
    files: list[Path]
    emb: np.ndarray
    features: np.ndarray
    placeholders: np.ndarray
    placeholder_ids: list[str]
    families: list[str]
    backbone: Backbone
    shipped: EmbeddingClassifier | None
    cache: EmbeddingCache


def _progress(message: str) -> None:
    # stderr, so that stdout is the markdown report alone.
    print(message, file=sys.stderr, flush=True)


def _opener(files: Sequence[Path]) -> Callable[[int], Image.Image]:
    def load(i: int) -> Image.Image:
        with Image.open(files[i]) as image:
            return image.convert("RGB")

    return load


def load_inputs(
    data_root: Path,
    cache_dir: Path,
    type_labels: Path,
    threads: int,
    precision: str = "fp32",
    quantization: Path | None = None,
    engine: EngineName = "torch",
) -> Inputs:
    """Read the table and embed every image and the 840 placeholders (through the caches).

    ``precision`` ``int8``: the shipped model's int8 backbone and heads (ONNX Runtime,
    the int8 model cached under ``<cache_dir>/onnx``); ``fp32``: the float backbone on
    ``engine`` (torch, or onnx: the same float network on ONNX Runtime; the embedding cache
    does not tell them apart, so give onnx its own cache folder). ``quantization``: the
    shipped network quantized with these ranges instead (a calibration to try; no shipped
    heads to score).
    """
    rows = read_sources(data_root, type_labels)
    files = [data_root / r.path for r in rows]
    shipped: EmbeddingClassifier | None = None
    if quantization is not None:
        spec = backbone_spec(BUNDLED_DIR)
        backbone = Backbone.load(
            spec.variant,
            threads=threads,
            engine="onnx",
            cache_dir=cache_dir,
            weights=spec.weights,
            quantization=quantization,
        )
    elif precision == "int8":
        shipped = EmbeddingClassifier.from_dir(
            BUNDLED_DIR, threads=threads, engine="onnx", cache_dir=cache_dir, precision="int8"
        )
        if "+int8@" not in shipped.backbone.backbone_id:
            raise SystemExit(f"{BUNDLED_DIR} has no usable int8 backbone (see the log)")
    else:
        shipped = EmbeddingClassifier.from_dir(
            BUNDLED_DIR, threads=threads, engine=engine, cache_dir=cache_dir
        )
    backbone = backbone if shipped is None else shipped.backbone
    keys = [hashlib.sha256(f.read_bytes()).hexdigest() for f in files]
    cache = EmbeddingCache.in_folder(cache_dir, backbone.backbone_id, PREPROCESS_ID)
    started = time.monotonic()
    emb = cache.get_or_compute(keys, _opener(files), backbone.embed_images)
    colored = [i for i, r in enumerate(rows) if r.color]
    feature_cache = EmbeddingCache.in_folder(cache_dir, FEATURE_ID, f"to-rgb-bilinear-{SIZE}")
    features = np.zeros((len(rows), FEATURE_DIM), dtype=np.float32)
    colored_files = [files[i] for i in colored]
    features[colored] = feature_cache.get_or_compute(
        [keys[i] for i in colored], _opener(colored_files), color_features_batch
    )
    made = generate_placeholders(840, seed=0)  # as cartag.training.bundled.build
    placeholders = cache.get_or_compute(
        [image_key(p.image) for p in made], lambda i: made[i].image, backbone.embed_images
    )
    _progress(
        f"embedded {len(rows)} images + {len(made)} placeholders "
        f"in {time.monotonic() - started:.0f} s"
    )
    ids, families = [p.id for p in made], [p.family for p in made]
    return Inputs(rows, files, emb, features, placeholders, ids, families, backbone, shipped, cache)


def type_train_folds(inputs: Inputs, n_folds: int) -> np.ndarray:
    """Fold per :class:`Table` row of type-train (-1 elsewhere): whole repositories,
    repositories that share a near-duplicate merged."""
    rows = [i for i, r in enumerate(inputs.rows) if r.source == TYPE_TRAIN]
    hashes = []
    for i in rows:
        with Image.open(inputs.files[i]) as image:
            hashes.append(phash(image.convert("RGB")))
    # -1 also for the placeholder rows that follow the table (build_table).
    fold = np.full(len(inputs.rows) + len(inputs.placeholders), -1, dtype=np.int64)
    groups = [inputs.rows[i].group for i in rows]
    fold[rows] = leave_group_out_folds(groups, hashes, n_folds, DUPLICATE_MAX_DISTANCE)
    return fold


@dataclass
class Table:
    """The inputs as training rows: the labelled table, then the placeholders.

    Attributes:
        keys: N keys (data-root paths; ``placeholder/0/<i>``).
        sources: N sources (:data:`cartag.training.evaluation.cross_source.PLACEHOLDER` last).
        emb: float32 (N, D) embeddings.
        color_in: float32 (N, D + F) color-head inputs (embedding, color features).
        y_type: (N,) type index, -1 = none.
        y_color: (N,) color index, -1 = none.
        holdout: bool (N,) held-out rows (:func:`cross_source.holdout_by_source`).
    """

    keys: list[str]
    sources: list[str]
    emb: np.ndarray
    color_in: np.ndarray
    y_type: np.ndarray
    y_color: np.ndarray
    holdout: np.ndarray


def build_table(inputs: Inputs, fold: np.ndarray) -> Table:
    """Stack the real rows and the placeholders; held-out rows by the bundled build's
    per-source rule (:func:`cartag.training.datasets.all_sources.source_holdout`)."""
    n_ph = len(inputs.placeholders)
    emb = np.concatenate([inputs.emb, inputs.placeholders])
    features = np.concatenate(
        [inputs.features, np.zeros((n_ph, inputs.features.shape[1]), np.float32)]
    )
    keys = [r.path for r in inputs.rows] + inputs.placeholder_ids
    sources = [r.source for r in inputs.rows] + [cs.PLACEHOLDER] * n_ph
    y_type = [IMAGE_TYPES.index(r.image_type) if r.image_type else -1 for r in inputs.rows]
    y_type += [PLACEHOLDER] * n_ph
    y_color = [COLORS.index(r.color) if r.color else -1 for r in inputs.rows] + [-1] * n_ph
    colors = np.asarray(y_color, dtype=np.int64)
    n = len(inputs.rows)
    holdout = np.concatenate([
        all_sources.source_holdout(inputs.rows, fold[:n]),
        holdout_mask(inputs.placeholder_ids, inputs.families),
    ])  # fmt: skip
    return Table(
        keys,
        sources,
        emb,
        np.concatenate([emb, features], axis=1),
        np.asarray(y_type, dtype=np.int64),
        colors,
        holdout,
    )


def _cv_order(keys: Sequence[str]) -> np.ndarray:
    # CV folds are taken by position (cartag.training.fitting.fit), so shuffle by key hash.
    return np.argsort([split_key("cv:" + k) for k in keys])


def fit_color(
    inputs: Inputs,
    table: Table,
    split: cs.Split,
    hp: dict[str, Any],
    select: bool,
    min_real: int = 1,
) -> tuple[Any, dict[str, Any]]:
    """The bundled color recipe on ``split.train`` (+ recolored photos of the target
    colors with fewer than ``min_real`` real training photos)."""
    train = split.train
    colors = [COLORS[c] for c in table.y_color[train]]
    missing = missing_targets(colors, min_real)
    files = [inputs.files[i] for i in train]
    made = synthesize(colors, _opener(files), RECOLORED_PER_COLOR, 0, missing)
    images = [m.image for m in made]
    X = table.color_in[train]
    if images:  # none when every target color has real training photos
        made_emb = inputs.cache.get_or_compute(
            [image_key(im) for im in images], lambda i: images[i], inputs.backbone.embed_images
        )
        made_in = np.concatenate([made_emb, color_features_batch(images)], axis=1)
        X = np.concatenate([X, made_in])
    y = np.concatenate([table.y_color[train], [COLORS.index(m.color) for m in made]])
    keys = [table.keys[i] for i in train]
    keys += [f"recolor:{m.color}:{keys[m.source]}" for m in made]
    order = _cv_order(keys)
    X, y = X[order], y[order].astype(np.int64)
    dim = table.emb.shape[1]
    l2, epochs = hp["color_l2"], hp["color_epochs"]
    cv: dict[str, Any] = {}
    if select:
        l2, epochs, cv = select_color_head(X, y, COLORS, mlp_start=dim)
    (head,) = fit_color_head(X, y, COLORS, mlp_start=dim, l2=l2, epochs=(epochs,))
    info = {"l2": l2, "epochs": epochs, **cv, "recolored": dict(Counter(m.color for m in made))}
    return head, info


def fit_type(table: Table, split: cs.Split, hp: dict[str, Any], select: bool) -> Any:
    """The bundled type recipe (balanced linear head, Placeholder offset) on ``split.train``.

    The offset is the hyper-parameter model's (``placeholder_logit_offset``, chosen
    on its build's out-of-fold logits); ``select`` only re-chooses ``l2``.
    """
    train = split.train[_cv_order([table.keys[i] for i in split.train])]
    X, y = table.emb[train], table.y_type[train]
    l2 = hp["type_l2"]
    if select:
        l2, _ = select_l2(X, y, IMAGE_TYPES, TYPE_L2_GRID)
    head = fit_linear_head(X, y, IMAGE_TYPES, l2=l2)
    head.bias = apply_offset(head.bias, hp["type_placeholder_offset"])
    return head


def _train_info(table: Table, split: cs.Split) -> dict[str, Any]:
    return {
        "n_train": int(len(split.train)),
        "train_sources": dict(Counter(table.sources[i] for i in split.train)),
    }


def run_color(
    inputs: Inputs, table: Table, hp: dict[str, Any], select: bool, min_real: int = 1
) -> list[dict[str, Any]]:
    """Every color protocol: fit, predict the test rows, score per source."""
    results = []
    for split in cs.color_splits(table.sources, table.y_color, table.holdout):
        started = time.monotonic()
        head, info = fit_color(inputs, table, split, hp, select, min_real)
        proba = head.predict_proba(table.color_in[split.test])
        y = table.y_color[split.test]
        scored = cs.score(y, proba, [table.sources[i] for i in split.test], COLORS)
        result = {"name": split.name, "task": "color", **_train_info(table, split), **scored}
        made, tests = list(info["recolored"]), np.asarray([table.sources[i] for i in split.test])
        result["coverage"] = {
            source: cs.coverage(table.y_color[split.train], y[tests == source], COLORS, made)
            for source in sorted(set(tests.tolist()))
        }
        result["fit"] = info
        result["targets"] = cs.check_targets("color", scored["overall"])
        result["seconds"] = round(time.monotonic() - started, 1)
        results.append(result)
        _progress(f"{split.name}: accuracy {scored['overall']['accuracy']:.3f}")
    return results


def run_type(
    table: Table, fold: np.ndarray, hp: dict[str, Any], select: bool, recipe: str = "all"
) -> list[dict[str, Any]]:
    """vcr (+ vcor) -> type-train, and leave-repo-out pooled over the folds.

    ``recipe`` ``all`` (the build on every source): vcr and vcor training splits and
    the training placeholders train every split, and the vcr + vcor held-out photos
    (real, none a placeholder, never trained on) count every Placeholder call as a
    false positive. ``vcr``: vcr + all placeholders train; every vcor photo counts.
    """
    src = np.asarray(table.sources)
    if recipe == "all":
        base = np.isin(src, [VCR, VCOR, cs.PLACEHOLDER]) & ~table.holdout
        vcor = np.flatnonzero(np.isin(src, [VCR, VCOR]) & table.holdout)
        base_name, real_name = "vcr+vcor", "vcr+vcor held-out"
    else:
        base = np.isin(src, [VCR, cs.PLACEHOLDER])
        vcor = np.flatnonzero(src == VCOR)
        base_name, real_name = VCR, VCOR
    first, *folds = cs.type_splits(table.sources, table.y_type, fold, base, base_name)
    results = []
    parts, real_preds, per_fold = [], [], []
    for split in (first, *folds):
        started = time.monotonic()
        head = fit_type(table, split, hp, select)
        proba = head.predict_proba(table.emb[split.test])
        real = head.predict_proba(table.emb[vcor]).argmax(axis=1)
        _progress(f"{split.name}: fitted in {time.monotonic() - started:.0f} s")
        if split is first:
            sources = [table.sources[i] for i in split.test]
            result = cs.type_result(split.name, table.y_type[split.test], proba, sources, real)
            result["placeholder"]["real_name"] = real_name
            results.append(
                {**result, **_train_info(table, split), "l2": head.metadata["fit"]["l2"]}
            )
            continue
        parts.append((split.test, proba))
        real_preds.append(real)
        y = table.y_type[split.test]
        per_fold.append({
            "fold": split.name,
            "n_test": int(len(split.test)),
            "l2": head.metadata["fit"]["l2"],
            "macro_recall": classification_report(y, proba, IMAGE_TYPES)["macro_recall"],
            "vcor_called_placeholder": int((real == PLACEHOLDER).sum()),
        })  # fmt: skip
    rows, proba = cs.pool(parts)
    # vcor photos are scored by the fold head that calls most of them Placeholder,
    # so the pooled precision is not flattered by averaging.
    worst = max(range(len(real_preds)), key=lambda k: int((real_preds[k] == PLACEHOLDER).sum()))
    name = f"type: leave-repo-out ({len(parts)} folds)"
    sources = [table.sources[i] for i in rows]
    pooled = cs.type_result(name, table.y_type[rows], proba, sources, real_preds[worst])
    pooled["placeholder"]["real_name"] = real_name
    results.append({**pooled, "folds": per_fold})
    return results


def run_shipped(inputs: Inputs, table: Table) -> list[dict[str, Any]]:
    """The shipped heads as they are, on every source (vcr split into held-out and seen).

    Targets are checked on the unseen sources: type-train for type, vcor for color.
    """
    n = len(inputs.rows)
    if inputs.shipped is None:
        return []
    names = [
        (f"{s} held-out" if h else f"{s} train split (seen)") if s == VCR else s
        for s, h in zip(table.sources[:n], table.holdout[:n], strict=True)
    ]
    type_pred = inputs.shipped.type_head.predict_proba(table.emb[:n])
    color_pred = inputs.shipped.color_head.predict_proba(table.color_in[:n])
    vcor = np.asarray(table.sources[:n]) == VCOR
    typed = np.flatnonzero(table.y_type[:n] >= 0)
    type_result: dict[str, Any] = {"name": "shipped: type", "task": "image_type"}
    type_result |= cs.score(
        table.y_type[typed], type_pred[typed], [names[i] for i in typed], IMAGE_TYPES
    )
    unseen = np.flatnonzero(np.asarray(names) == TYPE_TRAIN)
    ph = cs.placeholder_stats(
        table.y_type[unseen],
        type_pred[unseen].argmax(axis=1),
        PLACEHOLDER,
        type_pred[vcor].argmax(axis=1),
    )
    type_result["placeholder"] = ph
    type_result["targets"] = cs.check_targets(
        "image_type", type_result["by_source"][TYPE_TRAIN], ph["precision_with_real"]
    )
    colored = np.flatnonzero(table.y_color[:n] >= 0)
    color_result: dict[str, Any] = {"name": "shipped: color", "task": "color"}
    color_result |= cs.score(
        table.y_color[colored], color_pred[colored], [names[i] for i in colored], COLORS
    )
    color_result["targets"] = cs.check_targets("color", color_result["by_source"][VCOR])
    return [type_result, color_result]


def main(argv: Sequence[str] | None = None) -> None:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--data", type=Path, default=Path("../shared/data"))
    parser.add_argument("--cache-dir", type=Path, default=Path("cartag-data/cache"))
    parser.add_argument("--json", type=Path, default=None, help="write every figure here")
    parser.add_argument(
        "--card",
        type=Path,
        default=None,
        help="model folder (the --hp-from one) to write cross_source.json into and re-render "
        "its MODEL_CARD.md",
    )
    parser.add_argument("--folds", type=int, default=5, help="leave-repo-out folds")
    parser.add_argument("--select", action="store_true", help="choose l2/epochs by CV per fit")
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--type-labels", type=Path, default=TYPE_LABELS_PATH, help="vcr types")
    parser.add_argument(
        "--precision",
        choices=("fp32", "int8"),
        default="fp32",
        help="embeddings of the float backbone, or of the shipped int8 one (heads refitted "
        "on them; hyper-parameters from the --hp-from folder's int8 heads)",
    )
    parser.add_argument(
        "--engine",
        choices=("torch", "onnx"),
        default="torch",
        help="what runs the fp32 backbone (onnx: give it its own --cache-dir; it measures how "
        "far the protocol moves for embeddings that differ by ~1e-5)",
    )
    parser.add_argument(
        "--quantization",
        type=Path,
        default=None,
        help="int8 with these ranges (a quantization.json) instead of the shipped ones",
    )
    parser.add_argument(
        "--recipe",
        choices=("all", "vcr"),
        default="all",
        help="type protocols: 'all' trains on vcr+vcor training splits too (the build on "
        "every source); 'vcr' as the build on vcr-train alone",
    )
    parser.add_argument(
        "--recolor-min-real",
        type=int,
        default=1,
        help="recolor target colors with fewer real training photos than this (1 = none)",
    )
    parser.add_argument(
        "--hp-from",
        type=Path,
        default=None,
        help="model folder whose heads' l2/epochs to use (default: the shipped model)",
    )
    args = parser.parse_args(argv)
    started = time.monotonic()
    if args.quantization is not None:
        args.precision = "int8"
    inputs = load_inputs(
        args.data,
        args.cache_dir,
        args.type_labels,
        args.threads,
        args.precision,
        args.quantization,
        args.engine,
    )
    fold = type_train_folds(inputs, args.folds)
    table = build_table(inputs, fold)
    hp = hyper_parameters(args.hp_from or BUNDLED_DIR, args.precision)
    results = run_shipped(inputs, table)
    results += run_color(inputs, table, hp, args.select, args.recolor_min_real)
    results += run_type(table, fold, hp, args.select, args.recipe)
    print(cs.markdown(results))
    if args.json is not None:
        folds: dict[str, set[str]] = {}
        for i in np.flatnonzero(fold >= 0):
            folds.setdefault(str(fold[i]), set()).add(inputs.rows[i].group)
        out = {
            "model_version": None if inputs.shipped is None else inputs.shipped.version,
            "quantization": None if args.quantization is None else str(args.quantization),
            "backbone_id": inputs.backbone.backbone_id,
            "precision": args.precision,
            "type_labels_sha256": hashlib.sha256(args.type_labels.read_bytes()).hexdigest(),
            "data": {s: int(n) for s, n in Counter(table.sources).items()},
            "hyper_parameters": "cv-selected per fit" if args.select else hp,
            "hyper_parameters_from": str(args.hp_from or "shipped model"),
            "recipe": args.recipe,
            "recolor_min_real": args.recolor_min_real,
            "relabels_sha256": hashlib.sha256(RELABELS_PATH.read_bytes()).hexdigest(),
            "type_train_folds": {k: sorted(v) for k, v in sorted(folds.items())},
            "results": results,
            "seconds": round(time.monotonic() - started, 1),
        }
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(out, indent=2) + "\n", encoding="utf-8")
        _progress(f"wrote {args.json}")
    if args.card is not None:
        name = CROSS_SOURCE_NAME if args.precision == "fp32" else CROSS_SOURCE_INT8_NAME
        write_card_summary(args.card, results, args.recipe, name)
        _progress(f"wrote {args.card / name} and re-rendered its MODEL_CARD.md")
    _progress(f"{time.monotonic() - started:.0f} s")


def hyper_parameters(folder: Path, precision: str) -> dict[str, Any]:
    """The l2, epochs and Placeholder offset of a model folder's heads (its int8 heads
    for ``int8`` when it has them)."""
    config = read_config(folder)
    int8 = int8_config(folder, config) if precision == "int8" else None
    names = config["heads"] if int8 is None else int8["heads"]
    type_head = load_head(folder / str(names["image_type"]))
    color_head = load_head(folder / str(names["color"]))
    type_fit, color_fit = type_head.metadata["fit"], color_head.metadata["fit"]
    return {
        "type_l2": type_fit["l2"],
        "type_placeholder_offset": float(type_head.metadata.get("placeholder_logit_offset", 0.0)),
        "color_l2": color_fit["l2"],
        "color_epochs": color_fit["mlp"]["epochs"],
    }


def write_card_summary(
    model_dir: Path,
    results: Sequence[dict[str, Any]],
    recipe: str,
    name: str = CROSS_SOURCE_NAME,
) -> None:
    """The refitted protocols' rows beside the weights (``name``), and the card rendered
    again."""
    rows = [
        {
            **{k: v for k, v in row.items() if k != "placeholder"},
            "placeholder_precision": row["placeholder"]["precision"]
            if row["placeholder"]
            else None,
        }
        for row in cs.summary_rows(results)
        if not row["protocol"].startswith("shipped")
    ]
    precision = "" if name == CROSS_SOURCE_NAME else " --precision int8"
    summary = {
        "command": (
            "python -m benchmarks.cross_source --data ../shared/data "
            f"--hp-from <this folder> --recipe {recipe} --card <this folder>{precision}"
        ),
        "rows": rows,
    }
    (model_dir / name).write_text(json.dumps(summary, indent=2) + "\n", "utf-8")
    (model_dir / "MODEL_CARD.md").write_text(render_card(model_dir), encoding="utf-8")


if __name__ == "__main__":
    main()
