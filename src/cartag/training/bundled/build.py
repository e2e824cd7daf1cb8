"""Train the bundled model: type and color heads on frozen EfficientNet-Lite embeddings.

The color head also reads hand-made color features of the vehicle region
(:mod:`cartag.training.heads.color`). The embeddings come from the variant's ImageNet
weights, or with ``--backbone-weights`` from a network fine-tuned on the same
training split (:mod:`cartag.training.bundled.finetune`); those weights are then copied
into the model folder. The corpus is :mod:`cartag.training.bundled.corpus`; what the
model folder records about the build, :mod:`cartag.training.bundled.config`.

Usage::

    cartag models finetune --data /work/shared/data/vcr-train \\
        --out cartag-data/finetune/backbone.npz
    cartag models build-bundled --data /work/shared/data/vcr-train \\
        --backbone-weights cartag-data/finetune/backbone.npz --out src/cartag/models/bundled

Embeddings are cached under ``--cache-dir`` (keyed by image content, backbone and
preprocessing), so reruns take seconds. The held-out 20% (rule in
:mod:`cartag.training.datasets.dataset`) is never used for fitting or model selection.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from cartag.clock import Clock, SystemClock
from cartag.imaging.placeholders import FAMILIES
from cartag.models.backbone import PREPROCESS_ID, Backbone
from cartag.models.classifier import (
    CONFIG_NAME,
    MODEL_FORMAT,
    backbone_config,
    copy_backbone_weights,
)
from cartag.models.color_features import FEATURE_ID, SIZE, color_features_batch
from cartag.models.heads import LinearHead
from cartag.training.bundled.color_head import train_bundled_color_head
from cartag.training.bundled.config import (
    SOURCE,
    SOURCES_TEXT,
    TYPE_NOTE,
    TYPE_NOTE_ALL,
    all_sources_config,
    command_line,
    split_rules,
)
from cartag.training.bundled.corpus import (
    PLACEHOLDER_SOURCE,
    Corpus,
    build_corpus,
    build_corpus_all,
)
from cartag.training.datasets import all_sources
from cartag.training.datasets.dataset import SPLIT_RULE, file_loader, image_key
from cartag.training.datasets.embedding_cache import EmbeddingCache
from cartag.training.datasets.type_labels import TYPE_LABELS_PATH
from cartag.training.evaluation.card import render_card
from cartag.training.fitting.metrics import classification_report
from cartag.training.heads.recolor import RECOLORED_PER_COLOR
from cartag.training.heads.type_head import train_type_head
from cartag.vocab import COLORS, IMAGE_TYPES


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
        weights: Fine-tuned weights of ``variant`` (:mod:`cartag.training.bundled.finetune`),
            trained on this split's training rows only; None = the ImageNet weights.
        recolored_per_color: Recolored training photos for each color vcr-train has
            no photos of (:mod:`cartag.training.heads.recolor`).
        sources: None = ``data_dir`` is the vcr-train folder (the original build);
            else ``data_dir`` is the data root and these sources of
            :mod:`cartag.training.datasets.all_sources` are used (reviewed labels, per-source
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

    cache = EmbeddingCache.in_folder(cache_dir, backbone.backbone_id, PREPROCESS_ID)

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
            "reviewed labels of every source (cartag.training.datasets.sources.read_sources) "
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
        feature_cache = EmbeddingCache.in_folder(cache_dir, FEATURE_ID, f"to-rgb-bilinear-{SIZE}")
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
        "split_rule": SPLIT_RULE if sources is None else split_rules(sources),
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
                "generator": "cartag.training.heads.recolor",
                "per_color": recolored_per_color,
                "seed": seed,
                # Colors that got recolored photos: none when every color has real ones.
                "colors": color_metrics.get("recolor_rule", {}).get("recolored_colors", []),
            },
            "split_rule": SPLIT_RULE if sources is None else split_rules(sources),
            "type_label_note": TYPE_NOTE if sources is None else TYPE_NOTE_ALL,
            "type_labels_sha256": hashlib.sha256(TYPE_LABELS_PATH.read_bytes()).hexdigest(),
            "command": command_line(sources, finetune is not None, recolor_min_real),
            **({} if finetune is None else {"backbone_finetune": finetune}),
        },
        "created": now.isoformat(timespec="seconds"),
    }
    if sources is not None:
        config["training"].update(all_sources_config(corpus, sources, recolor_min_real))
        config["training"]["source"] = " ".join(SOURCES_TEXT[s] for s in sources)
    (out_dir / CONFIG_NAME).write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
    (out_dir / "MODEL_CARD.md").write_text(render_card(out_dir), encoding="utf-8")
    return config


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
            f"{sidecar} (written beside the weights by cartag.training.bundled.finetune) "
            "is missing "
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
