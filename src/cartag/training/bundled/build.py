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

from cartag.clock import Clock, SystemClock
from cartag.imaging.placeholders import FAMILIES
from cartag.models.backbone import Backbone
from cartag.models.classifier import (
    CONFIG_NAME,
    MODEL_FORMAT,
    backbone_config,
    copy_backbone_weights,
)
from cartag.models.color_features import FEATURE_ID
from cartag.training.bundled.config import (
    SOURCE,
    SOURCES_TEXT,
    TYPE_NOTE,
    TYPE_NOTE_ALL,
    all_sources_config,
    command_line,
    split_rules,
)
from cartag.training.bundled.corpus import build_corpus, build_corpus_all
from cartag.training.bundled.heads import HeadRecipe, fit_heads
from cartag.training.bundled.quantization import Int8Build, build_int8
from cartag.training.bundled.reference import corpus_reference, write_reference
from cartag.training.datasets.dataset import SPLIT_RULE
from cartag.training.datasets.type_labels import TYPE_LABELS_PATH
from cartag.training.evaluation.card import render_card
from cartag.training.heads.recolor import RECOLORED_PER_COLOR


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
    int8: bool = False,
    calibration_method: str = "minmax",
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
        int8: Also calibrate the int8 backbone and fit heads on its embeddings with the
            same recipe (:func:`build_int8`); needs ``sources``.
        calibration_method: How the int8 activation ranges are measured
            (:func:`cartag.models.quantize.calibrate`).

    Returns:
        The config dict that was written.

    Raises:
        ValueError: The weights were fine-tuned with another split rule or variant, or
            int8 was asked of a single-folder build.
    """
    now = (clock or SystemClock()).now()
    finetune = None if weights is None else check_finetune(weights, variant)
    if int8 and sources is None:
        raise ValueError(
            "the int8 backbone is calibrated on a build of several sources (--sources)"
        )
    backbone = Backbone.load(variant, threads=threads, weights=weights)
    if sources is None:
        corpus = build_corpus(data_dir, backbone, cache_dir, n_placeholders, seed)
    else:
        corpus = build_corpus_all(data_dir, sources, backbone, cache_dir, n_placeholders, seed)
    recipe = HeadRecipe(l2, recolored_per_color, seed, recolor_min_real)
    type_head, color_head, color_metrics = fit_heads(
        corpus, backbone, data_dir, cache_dir, sources, recipe, now
    )
    out_dir.mkdir(parents=True, exist_ok=True)
    type_head.save(out_dir / "type_head")
    color_head.save(out_dir / "color_head")
    copy_backbone_weights(backbone, out_dir)
    int8_block: dict[str, Any] | None = None
    digests = type_head.digest() + color_head.digest() + backbone.backbone_id
    if int8:
        int8_block, int8_digests = build_int8(
            backbone,
            corpus,
            out_dir,
            Int8Build(cache_dir, data_dir, sources, recipe, now, threads, calibration_method),
            (type_head, color_head),
        )
        digests += int8_digests

    digest = hashlib.sha256(digests.encode()).hexdigest()
    config: dict[str, Any] = {
        "format": MODEL_FORMAT,
        "version": f"bundled-{now:%Y.%m.%d}-{digest[:8]}",
        "backbone": backbone_config(backbone),
        "heads": {"image_type": "type_head", "color": "color_head"},
        "color_features": FEATURE_ID,
        **({} if int8_block is None else {"int8": int8_block}),
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
            "command": command_line(
                sources,
                finetune is not None,
                recolor_min_real,
                calibration_method if int8 else None,
            ),
            **({} if finetune is None else {"backbone_finetune": finetune}),
        },
        "created": now.isoformat(timespec="seconds"),
    }
    if sources is not None:
        config["training"].update(all_sources_config(corpus, sources, recolor_min_real))
        config["training"]["source"] = " ".join(SOURCES_TEXT[s] for s in sources)
    (out_dir / CONFIG_NAME).write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
    # The drift reference is derived from the same corpus; it changes no answer, so it
    # is not part of the version's digest.
    reference, built_from = corpus_reference(corpus, backbone.backbone_id, seed=seed)
    config["reference"] = write_reference(out_dir, reference, built_from, seed=seed)
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
