"""Train the bundled model: type and color heads on frozen EfficientNet-Lite embeddings.

The color head also reads hand-made color features of the vehicle region
(:mod:`cartag.training.color`). The embeddings come from the variant's ImageNet
weights, or with ``--backbone-weights`` from a network fine-tuned on the same
training split (:mod:`cartag.training.finetune`); those weights are then copied
into the model folder.

Usage::

    python -m cartag.training.finetune --data /work/shared/data/vcr-train \\
        --out cartag-data/finetune/backbone.npz
    python -m cartag.training.bundled --data /work/shared/data/vcr-train \\
        --backbone-weights cartag-data/finetune/backbone.npz --out src/cartag/models/bundled

Embeddings are cached under ``--cache-dir`` (keyed by image content, backbone and
preprocessing), so reruns take seconds. The held-out 20% (rule in
:mod:`cartag.training.dataset`) is never used for fitting or model selection.
"""

from __future__ import annotations

import argparse
import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from PIL import Image

from cartag.clock import Clock, SystemClock
from cartag.imaging.keys import phash
from cartag.imaging.placeholders import FAMILIES, generate_placeholders
from cartag.models.backbone import PREPROCESS_ID, Backbone
from cartag.models.classifier import (
    CONFIG_NAME,
    MODEL_FORMAT,
    backbone_config,
    copy_backbone_weights,
)
from cartag.models.color_features import FEATURE_ID, SIZE, color_features_batch
from cartag.models.heads import LinearHead
from cartag.training import all_sources
from cartag.training.card import render_card
from cartag.training.color import file_loader, train_bundled_color_head
from cartag.training.dataset import (
    SPLIT_RULE,
    EmbeddingCache,
    data_hash,
    holdout_mask,
    image_key,
    read_labels,
    sample_loader,
    split_key,
)
from cartag.training.fit import fit_linear_head, select_l2
from cartag.training.metrics import classification_report
from cartag.training.recolor import RECOLORED_PER_COLOR
from cartag.training.relabels import RELABELS_PATH, change_counts, read_relabels
from cartag.training.sources import FOLDERS, TYPE_TRAIN, read_sources
from cartag.training.type_head import TYPE_LABELS_PATH, train_type_head
from cartag.vocab import COLORS, IMAGE_TYPES

L2_GRID = (3e-3, 1e-2, 3e-2, 0.1, 0.3)
PLACEHOLDER_SOURCE = "placeholder"
SOURCE = (
    "vcr-train: 2,883 web-scraped car photos from the public GitHub repository "
    "DananauRazvan/Vehicle-Color-Recognition (dataset/train/), color folders mapped to the "
    "cartag vocabulary (silver -> Grey). The repository states no licence: research and "
    "evaluation use only; the images are not redistributed, only these head weights."
)
SOURCES_TEXT = {
    "vcr": SOURCE,
    "vcor": (
        "vcor-train: 4,018 web-sourced car photos (a copy of the VCoR dataset in the public "
        "GitHub repository ndtands/CNN_Color_Car_Pytorch, dataset/train/), near-duplicates "
        "of vcr-train removed; no licence stated: research and evaluation use only."
    ),
    "type-train": (
        "type-train: 777 images with type labels (Dealer/Stock/Placeholder, including real "
        "placeholders and logos) from 80+ public GitHub repositories of dealer, rental, "
        "configurator and marketplace sites; mostly unlicensed, logos are trademarks: "
        "training/evaluation only, never redistributed."
    ),
}
TYPE_NOTE_ALL = (
    "Image-type labels follow LABELS.md: vcr types from the reviewed "
    "cartag/training/type_labels.csv, vcor photos Dealer unless reviewed (cut-outs on white: "
    "Stock; relabels.csv), type-train's own labels (looked at, against LABELS.md). "
    "Placeholder examples are type-train's real placeholders and logos plus synthetic ones "
    "(cartag.imaging.placeholders); placeholder recall is also measured on independent "
    "designs (cartag.training.placeholders_eval) that are never trained on."
)
TYPE_NOTE = (
    "Image-type labels for real photos are cleaned labels (cartag/training/type_labels.csv): "
    "the dataset's weak_type rule (white-border fraction > 0.25 -> Stock, < 0.05 -> Dealer), "
    "ranked by confident learning on out-of-fold predictions, reviewed by eye (all held-out "
    "photos and the most suspicious training ones) and completed where the rule abstains; "
    "held-out type metrics are against these cleaned labels. Convention: Stock is a real "
    "vehicle design shown whole on a plain or seamless backdrop (studio shot, press cut-out "
    "or computer render, white, grey or dark); Dealer is a real photo in a real setting, and "
    "also toys, scale models, ride-ons and cartoons, which the data README lists among the "
    "weak rule's errors on white (303 such images were moved from Stock to Dealer on "
    "2026-12-02 after a review of every Stock-labelled image). Placeholder examples are "
    "synthetic (cartag.imaging.placeholders); placeholder recall is measured on independent "
    "designs (cartag.training.placeholders_eval) that are never trained on."
)


@dataclass
class Corpus:
    """Everything embedded once.

    Attributes:
        keys: N split keys (labels.csv path or placeholder id).
        strata: N split strata (color or placeholder family).
        emb: float32 (N, D) embeddings.
        type_idx: (N,) index into IMAGE_TYPES, -1 where unknown.
        color_idx: (N,) index into COLORS, -1 for placeholders.
        family: N placeholder families ("" for real photos).
        holdout: bool (N,).
        data_hash: SHA-256 of labels + image content.
        sources: N source names (``vcr``, ``vcor``, ``type-train``, ``placeholder``);
            empty for the single-folder corpus of :func:`build_corpus`.
        files: N image files (None for placeholders); empty for :func:`build_corpus`.
        content: N content keys (file SHA-256, placeholder image key); likewise.
        hashes: pHashes of the real rows in corpus order; likewise.
        cv_groups: N type-head CV group labels (``repo:<repository>`` for type-train,
            ``family:<design family>`` for placeholders, ``""`` else); likewise.
    """

    keys: list[str]
    strata: list[str]
    emb: np.ndarray
    type_idx: np.ndarray
    color_idx: np.ndarray
    family: list[str]
    holdout: np.ndarray
    data_hash: str
    sources: list[str] = field(default_factory=list)
    files: list[Path | None] = field(default_factory=list)
    content: list[str] = field(default_factory=list)
    hashes: list[str] = field(default_factory=list)
    cv_groups: list[str] = field(default_factory=list)


def build_corpus(
    data_dir: Path, backbone: Backbone, cache_dir: Path, n_placeholders: int, seed: int
) -> Corpus:
    """Read labels, generate placeholders, embed everything (through the cache)."""
    samples = read_labels(data_dir)
    placeholders = generate_placeholders(n_placeholders, seed=seed)
    cache = EmbeddingCache(cache_dir, backbone.backbone_id, PREPROCESS_ID)

    real_emb = cache.get_or_compute(
        [s.sha256 for s in samples], sample_loader(samples), lambda ims: backbone.embed_images(ims)
    )
    ph_keys = [image_key(p.image) for p in placeholders]
    ph_emb = cache.get_or_compute(
        ph_keys, lambda i: placeholders[i].image, lambda ims: backbone.embed_images(ims)
    )
    keys = [s.path for s in samples] + [p.id for p in placeholders]
    strata = [s.color for s in samples] + [p.family for p in placeholders]
    unknown = -1
    type_idx = [IMAGE_TYPES.index(s.weak_type) if s.weak_type else unknown for s in samples]
    type_idx += [IMAGE_TYPES.index("Placeholder")] * len(placeholders)
    color_idx = [COLORS.index(s.color) for s in samples] + [unknown] * len(placeholders)
    lines = [f"{s.path}\t{s.color}\t{s.weak_type or ''}\t{s.sha256}" for s in samples]
    lines += [f"{p.id}\t{p.family}\t{k}" for p, k in zip(placeholders, ph_keys, strict=True)]
    return Corpus(
        keys=keys,
        strata=strata,
        emb=np.concatenate([real_emb, ph_emb]),
        type_idx=np.asarray(type_idx, dtype=np.int64),
        color_idx=np.asarray(color_idx, dtype=np.int64),
        family=[""] * len(samples) + [p.family for p in placeholders],
        holdout=holdout_mask(keys, strata),
        data_hash=data_hash(lines),
    )


class Embedder(Protocol):
    """What :func:`build_corpus_all` needs of a :class:`~cartag.models.backbone.Backbone`."""

    @property
    def backbone_id(self) -> str: ...

    def embed_images(self, images: list[Image.Image]) -> np.ndarray: ...


def build_corpus_all(
    data_root: Path,
    sources: Sequence[str],
    backbone: Embedder,
    cache_dir: Path,
    n_placeholders: int,
    seed: int,
    type_labels: Path = TYPE_LABELS_PATH,
) -> Corpus:
    """The reviewed table of ``sources`` (:func:`cartag.training.sources.read_sources`)
    and the generated placeholders, embedded, with the per-source held-out split
    (:mod:`cartag.training.all_sources`).

    Raises:
        FileNotFoundError: A requested source has no labels.csv under ``data_root``.
    """
    rows = [r for r in read_sources(data_root, type_labels) if r.source in sources]
    missing = sorted(set(sources) - {r.source for r in rows})
    if missing:
        raise FileNotFoundError(f"no labels.csv for {', '.join(missing)} in {data_root}")
    files = [data_root / r.path for r in rows]
    content = [hashlib.sha256(f.read_bytes()).hexdigest() for f in files]
    hashes = [phash(file_loader(files)(i)) for i in range(len(files))]
    fold = all_sources.type_train_folds(rows, hashes)
    held = all_sources.source_holdout(rows, fold)
    placeholders = generate_placeholders(n_placeholders, seed=seed)
    cache = EmbeddingCache(cache_dir, backbone.backbone_id, PREPROCESS_ID)
    real_emb = cache.get_or_compute(content, file_loader(files), backbone.embed_images)
    ph_keys = [image_key(p.image) for p in placeholders]
    ph_emb = cache.get_or_compute(
        ph_keys, lambda i: placeholders[i].image, lambda ims: backbone.embed_images(ims)
    )
    ph_ids = [p.id for p in placeholders]
    ph_family = [p.family for p in placeholders]
    type_idx = [IMAGE_TYPES.index(r.image_type) if r.image_type else -1 for r in rows]
    type_idx += [IMAGE_TYPES.index("Placeholder")] * len(placeholders)
    color_idx = [COLORS.index(r.color) if r.color else -1 for r in rows]
    color_idx += [-1] * len(placeholders)
    lines = [
        f"{r.source}\t{r.path}\t{r.image_type or ''}\t{r.color or ''}\t{c}"
        for r, c in zip(rows, content, strict=True)
    ]
    lines += [f"{p.id}\t{p.family}\t{k}" for p, k in zip(placeholders, ph_keys, strict=True)]
    return Corpus(
        keys=[r.path for r in rows] + ph_ids,
        strata=[all_sources.folder(r.path) or r.group for r in rows] + ph_family,
        emb=np.concatenate([real_emb, ph_emb]),
        type_idx=np.asarray(type_idx, dtype=np.int64),
        color_idx=np.asarray(color_idx, dtype=np.int64),
        family=[""] * len(rows) + ph_family,
        holdout=np.concatenate([held, holdout_mask(ph_ids, ph_family)]),
        data_hash=data_hash(lines),
        sources=[r.source for r in rows] + [PLACEHOLDER_SOURCE] * len(placeholders),
        files=[*files, *([None] * len(placeholders))],
        content=content + ph_keys,
        hashes=hashes,
        cv_groups=[f"repo:{r.group}" if r.source == TYPE_TRAIN else "" for r in rows]
        + [f"family:{f}" for f in ph_family],
    )


def per_source_metrics(
    corpus: Corpus, type_head: LinearHead, color_head: LinearHead, color_in: np.ndarray
) -> dict[str, Any]:
    """Held-out figures per source: type report + Placeholder precision, color report.

    Placeholder precision counts every held-out real image called Placeholder that
    is not a labelled Placeholder as a false positive (generated placeholders are
    reported as their own source).
    """
    placeholder = IMAGE_TYPES.index("Placeholder")
    src = np.asarray(corpus.sources)
    real = src != PLACEHOLDER_SOURCE
    held = np.flatnonzero(corpus.holdout)
    type_pred = np.full(len(corpus.keys), -1, dtype=np.int64)
    type_proba = type_head.predict_proba(corpus.emb[held])
    type_pred[held] = type_proba.argmax(axis=1)
    proba_of = dict(zip(held.tolist(), type_proba, strict=True))
    out: dict[str, Any] = {}
    for source in dict.fromkeys(corpus.sources):
        mine = np.flatnonzero(corpus.holdout & (src == source))
        entry: dict[str, Any] = {"n_held_out": int(len(mine))}
        typed = mine[corpus.type_idx[mine] >= 0]
        if len(typed):
            entry["image_type"] = classification_report(
                corpus.type_idx[typed], np.stack([proba_of[i] for i in typed]), IMAGE_TYPES
            )
            entry["placeholder"] = all_sources.placeholder_precision(
                corpus.type_idx[mine], type_pred[mine], placeholder, real[mine]
            )
        colored = mine[corpus.color_idx[mine] >= 0]
        if len(colored):
            entry["color"] = classification_report(
                corpus.color_idx[colored], color_head.predict_proba(color_in[colored]), COLORS
            )
        out[source] = entry
    out["all"] = {
        "placeholder": all_sources.placeholder_precision(
            corpus.type_idx[held], type_pred[held], placeholder, real[held]
        )
    }
    return out


def _cv_order(keys: Sequence[str], rows: np.ndarray) -> np.ndarray:
    # Cross-validation folds are taken by position, so shuffle by a key hash first.
    return rows[np.argsort([split_key("cv:" + keys[i]) for i in rows])]


def fit_and_evaluate(
    corpus: Corpus, labels: Sequence[str], y: np.ndarray, l2: float | None
) -> tuple[LinearHead, dict[str, Any], np.ndarray]:
    """Fit one head on the training split and report on the held-out split.

    Args:
        corpus: The embedded data.
        labels: Head labels.
        y: (N,) target index per corpus row, -1 = not used.
        l2: Penalty, or None to choose it by 4-fold CV on the training split.

    Returns:
        The head, its metrics dict, and the held-out rows it was scored on.
    """
    train = _cv_order(corpus.keys, np.flatnonzero(~corpus.holdout & (y >= 0)))
    test = np.flatnonzero(corpus.holdout & (y >= 0))
    cv_scores: dict[str, float] = {}
    if l2 is None:
        l2, cv_scores = select_l2(corpus.emb[train], y[train], labels, L2_GRID)
    head = fit_linear_head(corpus.emb[train], y[train], labels, l2=l2)
    report = classification_report(y[test], head.predict_proba(corpus.emb[test]), labels)
    metrics: dict[str, Any] = {"held_out": report}
    if cv_scores:
        metrics["l2_cv_balanced_accuracy"] = cv_scores
    return head, metrics, test


def train_bundled(
    data_dir: Path,
    out_dir: Path,
    cache_dir: Path,
    *,
    variant: str = "efficientnet-lite0",
    n_placeholders: int = 840,
    recolored_per_color: int = RECOLORED_PER_COLOR,
    seed: int = 0,
    l2: float | None = None,
    threads: int = 0,
    weights: Path | None = None,
    clock: Clock | None = None,
    sources: Sequence[str] | None = None,
    recolor_min_real: int = 1,
) -> dict[str, Any]:
    """Train, evaluate and write a model directory (config, heads, card).

    Args:
        weights: Fine-tuned weights of ``variant`` (:mod:`cartag.training.finetune`),
            trained on this split's training rows only; None = the ImageNet weights.
        recolored_per_color: Recolored training photos for each color vcr-train has
            no photos of (:mod:`cartag.training.recolor`).
        sources: None = ``data_dir`` is the vcr-train folder (the original build);
            else ``data_dir`` is the data root and these sources of
            :mod:`cartag.training.all_sources` are used (reviewed labels, per-source
            held-out split, per-source held-out figures).
        recolor_min_real: Target colors with fewer real training photos than this
            get recolored photos (1 = only colors with none).

    Returns:
        The config dict that was written.

    Raises:
        ValueError: The weights were fine-tuned with another split rule or variant.
    """
    now = (clock or SystemClock()).now()
    finetune = None if weights is None else check_finetune(weights, variant)
    backbone = Backbone.load(variant, threads=threads, weights=weights)
    if sources is None:
        corpus = build_corpus(data_dir, backbone, cache_dir, n_placeholders, seed)
    else:
        corpus = build_corpus_all(data_dir, sources, backbone, cache_dir, n_placeholders, seed)

    cache = EmbeddingCache(cache_dir, backbone.backbone_id, PREPROCESS_ID)

    def embed(images: list[Image.Image]) -> np.ndarray:
        keys = [image_key(image) for image in images]
        return cache.get_or_compute(keys, lambda i: images[i], backbone.embed_images)

    if sources is None:
        type_head, type_metrics = train_type_head(corpus, data_dir, embed, l2=l2)
    else:
        type_head, type_metrics = train_type_head(
            corpus,
            data_dir,
            embed,
            l2=l2,
            hashes=corpus.hashes,
            targets=corpus.type_idx,
            cv_groups=corpus.cv_groups,
        )
        type_metrics["label_source"] = (
            "reviewed labels of every source (cartag.training.sources.read_sources) "
            "+ synthetic placeholders"
        )
    color_head, color_metrics = train_bundled_color_head(
        corpus,
        data_dir,
        cache_dir,
        embed,
        l2=l2,
        recolored_per_color=recolored_per_color,
        seed=seed,
        recolor_min_real=recolor_min_real,
    )
    by_source: dict[str, Any] | None = None
    if sources is not None:
        color_in = np.zeros((len(corpus.keys), color_head.weight.shape[0]), dtype=np.float32)
        colored = np.flatnonzero(corpus.color_idx >= 0)
        feature_cache = EmbeddingCache(cache_dir, FEATURE_ID, f"to-rgb-bilinear-{SIZE}")
        color_files = [Path(str(corpus.files[i])) for i in colored]
        features = feature_cache.get_or_compute(
            [corpus.content[i] for i in colored], file_loader(color_files), color_features_batch
        )
        color_in[colored] = np.concatenate([corpus.emb[colored], features], axis=1)
        by_source = per_source_metrics(corpus, type_head, color_head, color_in)
        type_metrics["held_out_by_source"] = {
            k: {m: v[m] for m in ("image_type", "placeholder") if m in v}
            for k, v in by_source.items()
        }
        color_metrics["held_out_by_source"] = {
            k: v["color"] for k, v in by_source.items() if "color" in v
        }

    common = {
        "backbone_id": backbone.backbone_id,
        "input_size": backbone.input_size,
        "mean": list(backbone.mean),
        "std": list(backbone.std),
        "preprocess": PREPROCESS_ID,
        "training_data_sha256": corpus.data_hash,
        "split_rule": SPLIT_RULE if sources is None else _split_rules(sources),
        "created": now.isoformat(timespec="seconds"),
    }
    type_head.metadata.update({**common, "task": "image_type", "metrics": type_metrics})
    type_head.metadata["label_note"] = TYPE_NOTE if sources is None else TYPE_NOTE_ALL
    color_head.metadata.update({**common, "task": "color", "metrics": color_metrics})
    out_dir.mkdir(parents=True, exist_ok=True)
    type_head.save(out_dir / "type_head")
    color_head.save(out_dir / "color_head")
    copy_backbone_weights(backbone, out_dir)

    digest = hashlib.sha256(
        (type_head.digest() + color_head.digest() + backbone.backbone_id).encode()
    ).hexdigest()
    config: dict[str, Any] = {
        "format": MODEL_FORMAT,
        "version": f"bundled-{now:%Y.%m.%d}-{digest[:8]}",
        "backbone": backbone_config(backbone),
        "heads": {"image_type": "type_head", "color": "color_head"},
        "color_features": FEATURE_ID,
        "training": {
            "source": SOURCE,
            "data_sha256": corpus.data_hash,
            "n_real": int(sum(1 for f in corpus.family if not f)),
            "placeholders": {
                "generator": "cartag.imaging.placeholders",
                "n": n_placeholders,
                "seed": seed,
                "families": list(FAMILIES),
            },
            "recolored": {
                "generator": "cartag.training.recolor",
                "per_color": recolored_per_color,
                "seed": seed,
                # Colors that got recolored photos: none when every color has real ones.
                "colors": color_metrics.get("recolor_rule", {}).get("recolored_colors", []),
            },
            "split_rule": SPLIT_RULE if sources is None else _split_rules(sources),
            "type_label_note": TYPE_NOTE if sources is None else TYPE_NOTE_ALL,
            "type_labels_sha256": hashlib.sha256(TYPE_LABELS_PATH.read_bytes()).hexdigest(),
            "command": _command(sources, finetune is not None, recolor_min_real),
            **({} if finetune is None else {"backbone_finetune": finetune}),
        },
        "created": now.isoformat(timespec="seconds"),
    }
    if sources is not None:
        config["training"].update(_all_sources_config(corpus, sources, recolor_min_real))
        config["training"]["source"] = " ".join(SOURCES_TEXT[s] for s in sources)
    (out_dir / CONFIG_NAME).write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
    (out_dir / "MODEL_CARD.md").write_text(render_card(out_dir), encoding="utf-8")
    return config


def _split_rules(sources: Sequence[str]) -> str:
    rules = all_sources.SPLIT_RULES
    return "; ".join(f"{s}: {rules[s]}" for s in [*sources, PLACEHOLDER_SOURCE])


def _command(sources: Sequence[str] | None, finetuned: bool, recolor_min_real: int) -> str:
    if sources is None:
        command = "python -m cartag.training.bundled --data <vcr-train> --out <dir>"
    else:
        command = (
            "python -m cartag.training.bundled --data <shared data root> "
            f"--sources {','.join(sources)} --out <dir>"
        )
        if recolor_min_real != 1:
            command += f" --recolor-min-real {recolor_min_real}"
    return command + (" --backbone-weights <finetune .npz>" if finetuned else "")


def _all_sources_config(
    corpus: Corpus, sources: Sequence[str], recolor_min_real: int
) -> dict[str, Any]:
    """What a build on several sources records: sources, counts, label hashes, split."""
    return {
        "sources": {s: FOLDERS[s] for s in sources},
        "n_real_by_source": {s: corpus.sources.count(s) for s in sources},
        "counts": {
            "image_type": all_sources.counts(
                corpus.sources, corpus.holdout, corpus.type_idx, IMAGE_TYPES
            ),
            "color": all_sources.counts(corpus.sources, corpus.holdout, corpus.color_idx, COLORS),
        },
        "label_review": change_counts(read_relabels()),
        "labels_sha256": {
            "type_labels.csv": hashlib.sha256(TYPE_LABELS_PATH.read_bytes()).hexdigest(),
            "relabels.csv": hashlib.sha256(RELABELS_PATH.read_bytes()).hexdigest(),
        },
        "labels": (
            "cartag.training.sources.read_sources: vcr types from type_labels.csv, vcor types "
            "reviewed else Dealer, type-train types from its labels.csv; vcr/vcor colors from "
            "their folders with relabels.csv applied; type-train has no colors"
        ),
        "split_rules": {s: all_sources.SPLIT_RULES[s] for s in [*sources, PLACEHOLDER_SOURCE]},
        "recolor_rule": (
            f"target colors with fewer than {recolor_min_real} real training photo(s) get "
            "recolored photos"
        ),
    }


def check_finetune(weights: Path, variant: str) -> dict[str, Any]:
    """The sidecar of fine-tuned weights, checked to be usable for the bundled split.

    Raises:
        ValueError: No sidecar, another variant, or another split rule (its training
            rows could include this split's held-out photos).
    """
    sidecar = weights.with_suffix(".json")
    try:
        meta = json.loads(sidecar.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ValueError(
            f"{sidecar} (written beside the weights by cartag.training.finetune) is missing "
            f"or unreadable: {exc}"
        ) from exc
    if meta.get("variant") != variant:
        raise ValueError(f"{weights} fine-tunes {meta.get('variant')!r}, not {variant!r}")
    if meta.get("split_rule") != SPLIT_RULE:
        raise ValueError(
            f"{weights} was fine-tuned with another held-out split; its held-out figures "
            "would not be honest. Fine-tune again with this cartag."
        )
    keep = ("backbone_id", "base_backbone_id", "recipe", "training_data_sha256", "n_train", "log")
    return {key: meta[key] for key in keep if key in meta}


def main(argv: Sequence[str] | None = None) -> None:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument(
        "--data",
        type=Path,
        required=True,
        help="the vcr-train folder, or with --sources the data root holding the sets",
    )
    parser.add_argument(
        "--sources",
        default=None,
        help="comma-separated sources of the data root (vcr,vcor,type-train); default: "
        "all of them when --data has no labels.csv, else the single folder",
    )
    parser.add_argument(
        "--recolor-min-real",
        type=int,
        default=1,
        help="recolor target colors with fewer real training photos than this (1 = none)",
    )
    parser.add_argument("--out", type=Path, required=True, help="model folder to write")
    parser.add_argument("--cache-dir", type=Path, default=Path("cartag-data/cache"))
    parser.add_argument("--variant", default="efficientnet-lite0")
    parser.add_argument("--placeholders", type=int, default=840)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--recolored-per-color",
        type=int,
        default=RECOLORED_PER_COLOR,
        help="recolored training photos per color the set lacks (0 = none)",
    )
    parser.add_argument("--l2", type=float, default=None, help="skip the CV choice of l2")
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument(
        "--backbone-weights",
        type=Path,
        default=None,
        help="fine-tuned weights (.npz)",
    )
    args = parser.parse_args(argv)
    if args.recolored_per_color < 0:
        raise SystemExit("error: --recolored-per-color must be 0 or more")
    if args.recolor_min_real < 1:
        raise SystemExit("error: --recolor-min-real must be 1 or more")
    sources: list[str] | None = None
    if args.sources is not None:
        try:
            sources = all_sources.parse_sources(args.sources)
        except ValueError as exc:
            raise SystemExit(f"error: {exc}") from exc
    elif not (args.data / "labels.csv").is_file():
        sources = list(all_sources.ALL)
    if args.backbone_weights is not None and not args.backbone_weights.is_file():
        raise SystemExit(f"error: --backbone-weights {args.backbone_weights} does not exist")
    config = train_bundled(
        args.data,
        args.out,
        args.cache_dir,
        variant=args.variant,
        n_placeholders=args.placeholders,
        recolored_per_color=args.recolored_per_color,
        seed=args.seed,
        l2=args.l2,
        threads=args.threads,
        weights=args.backbone_weights,
        sources=sources,
        recolor_min_real=args.recolor_min_real,
    )
    print(f"wrote {args.out} ({config['version']})")
    print((args.out / "MODEL_CARD.md").read_text(encoding="utf-8"))


if __name__ == "__main__":
    main()
