"""The bundled model's heads: the recipe that fits them on a corpus' embeddings.

:func:`fit_heads` is the whole recipe (type head with its CV-chosen penalty and
Placeholder offset, color head with its recolored photos, held-out figures per
source); the build runs it on the float embeddings and, for the int8 backbone, on
the int8 embeddings of the same corpus (:mod:`cartag.training.bundled.quantization`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from cartag.models.backbone import PREPROCESS_ID, Backbone
from cartag.models.color_features import FEATURE_ID, SIZE, color_features_batch
from cartag.models.heads import LinearHead, MLPHead
from cartag.training.bundled.color_head import train_bundled_color_head
from cartag.training.bundled.config import TYPE_NOTE, TYPE_NOTE_ALL, split_rules
from cartag.training.bundled.corpus import PLACEHOLDER_SOURCE, Corpus
from cartag.training.datasets import all_sources
from cartag.training.datasets.dataset import SPLIT_RULE, file_loader, image_key
from cartag.training.datasets.embedding_cache import EmbeddingCache
from cartag.training.fitting.metrics import classification_report
from cartag.training.heads.color import MLPConfig
from cartag.training.heads.recolor import RECOLORED_PER_COLOR
from cartag.training.heads.type_head import train_type_head
from cartag.vocab import COLORS, IMAGE_TYPES


@dataclass(frozen=True)
class HeadRecipe:
    """The build's head options (see :func:`cartag.training.bundled.build.train_bundled`).

    Attributes:
        l2: Fixed penalty of both heads, or None to choose it by CV.
        recolored_per_color: Recolored photos per missing target color.
        seed: Seed of the recoloring.
        recolor_min_real: Target colors with fewer real training photos than this get
            recolored photos.
        type_l2: The type head's penalty, None = ``l2``.
        color_l2: The color head's linear penalty, None = ``l2``.
        color_epochs: The color MLPs' epochs, None = chosen by CV.
        placeholder_offset: The type head's Placeholder logit offset, None = chosen on
            the out-of-fold logits.
    """

    l2: float | None = None
    recolored_per_color: int = RECOLORED_PER_COLOR
    seed: int = 0
    recolor_min_real: int = 1
    type_l2: float | None = None
    color_l2: float | None = None
    color_epochs: int | None = None
    placeholder_offset: float | None = None


def same_hyper_parameters(
    recipe: HeadRecipe, type_head: LinearHead, color_head: MLPHead
) -> HeadRecipe:
    """``recipe`` with every hyper-parameter the heads' fit chose (penalties, epochs,
    Placeholder offset) fixed to theirs: heads refitted on other embeddings of the same
    network (the int8 ones) then differ from these by the embeddings alone, not by a
    choice that a one-photo tie can flip."""
    return replace(
        recipe,
        type_l2=float(type_head.metadata["fit"]["l2"]),
        color_l2=float(color_head.metadata["fit"]["l2"]),
        color_epochs=int(color_head.metadata["fit"]["mlp"]["epochs"]),
        placeholder_offset=float(type_head.metadata.get("placeholder_logit_offset", 0.0)),
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


def fit_heads(
    corpus: Corpus,
    backbone: Backbone,
    data_dir: Path,
    cache_dir: Path,
    sources: Sequence[str] | None,
    recipe: HeadRecipe,
    now: datetime,
) -> tuple[LinearHead, MLPHead, dict[str, Any]]:
    """Fit the type and color heads on ``corpus.emb`` (made by ``backbone``).

    Args:
        corpus: The embedded corpus.
        backbone: What made the embeddings (recolored photos and placeholder
            designs are embedded with it, through the cache).
        data_dir: The vcr-train folder, or the data root of a build on ``sources``.
        cache_dir: Embedding and feature cache folder.
        sources: The sources of the build, None for a single vcr-train folder.
        recipe: Head options.
        now: The build's time (recorded in the heads).

    Returns:
        The type head and color head with their metadata (metrics, backbone id, ...),
        and the color metrics.
    """
    cache = EmbeddingCache.in_folder(cache_dir, backbone.backbone_id, PREPROCESS_ID)
    type_l2 = recipe.l2 if recipe.type_l2 is None else recipe.type_l2
    # An epoch grid of one value fixes the epochs (CV then only scores it).
    mlp = None if recipe.color_epochs is None else MLPConfig(epoch_grid=(recipe.color_epochs,))

    def embed(images: list[Image.Image]) -> np.ndarray:
        keys = [image_key(image) for image in images]
        return cache.get_or_compute(keys, lambda i: images[i], backbone.embed_images)

    if sources is None:
        type_head, type_metrics = train_type_head(
            corpus, data_dir, embed, l2=type_l2, offset=recipe.placeholder_offset
        )
    else:
        type_head, type_metrics = train_type_head(
            corpus,
            data_dir,
            embed,
            l2=type_l2,
            hashes=corpus.hashes,
            targets=corpus.type_idx,
            cv_groups=corpus.cv_groups,
            offset=recipe.placeholder_offset,
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
        l2=recipe.l2 if recipe.color_l2 is None else recipe.color_l2,
        recolored_per_color=recipe.recolored_per_color,
        seed=recipe.seed,
        recolor_min_real=recipe.recolor_min_real,
        config=mlp,
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
    return type_head, color_head, color_metrics
