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
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from cartag.clock import Clock, SystemClock
from cartag.models.backbone import PREPROCESS_ID, Backbone
from cartag.models.classifier import (
    CONFIG_NAME,
    MODEL_FORMAT,
    backbone_config,
    copy_backbone_weights,
)
from cartag.models.color_features import FEATURE_ID
from cartag.models.heads import LinearHead
from cartag.training.card import render_card
from cartag.training.color import train_bundled_color_head
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
from cartag.training.placeholders import FAMILIES, generate_placeholders
from cartag.training.recolor import RECOLORED_PER_COLOR
from cartag.training.type_head import TYPE_LABELS_PATH, train_type_head
from cartag.vocab import COLORS, IMAGE_TYPES

L2_GRID = (3e-3, 1e-2, 3e-2, 0.1, 0.3)
SOURCE = (
    "vcr-train: 2,883 web-scraped car photos from the public GitHub repository "
    "DananauRazvan/Vehicle-Color-Recognition (dataset/train/), color folders mapped to the "
    "cartag vocabulary (silver -> Grey). The repository states no licence: research and "
    "evaluation use only; the images are not redistributed, only these head weights."
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
    "synthetic (cartag.training.placeholders); placeholder recall is measured on independent "
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
    """

    keys: list[str]
    strata: list[str]
    emb: np.ndarray
    type_idx: np.ndarray
    color_idx: np.ndarray
    family: list[str]
    holdout: np.ndarray
    data_hash: str


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
) -> dict[str, Any]:
    """Train, evaluate and write a model directory (config, heads, card).

    Args:
        weights: Fine-tuned weights of ``variant`` (:mod:`cartag.training.finetune`),
            trained on this split's training rows only; None = the ImageNet weights.
        recolored_per_color: Recolored training photos for each color vcr-train has
            no photos of (:mod:`cartag.training.recolor`).

    Returns:
        The config dict that was written.

    Raises:
        ValueError: The weights were fine-tuned with another split rule or variant.
    """
    now = (clock or SystemClock()).now()
    finetune = None if weights is None else check_finetune(weights, variant)
    backbone = Backbone.load(variant, threads=threads, weights=weights)
    corpus = build_corpus(data_dir, backbone, cache_dir, n_placeholders, seed)

    cache = EmbeddingCache(cache_dir, backbone.backbone_id, PREPROCESS_ID)

    def embed(images: list[Image.Image]) -> np.ndarray:
        keys = [image_key(image) for image in images]
        return cache.get_or_compute(keys, lambda i: images[i], backbone.embed_images)

    type_head, type_metrics = train_type_head(corpus, data_dir, embed, l2=l2)
    color_head, color_metrics = train_bundled_color_head(
        corpus,
        data_dir,
        cache_dir,
        embed,
        l2=l2,
        recolored_per_color=recolored_per_color,
        seed=seed,
    )

    common = {
        "backbone_id": backbone.backbone_id,
        "input_size": backbone.input_size,
        "mean": list(backbone.mean),
        "std": list(backbone.std),
        "preprocess": PREPROCESS_ID,
        "training_data_sha256": corpus.data_hash,
        "split_rule": SPLIT_RULE,
        "created": now.isoformat(timespec="seconds"),
    }
    type_head.metadata.update({**common, "task": "image_type", "metrics": type_metrics})
    type_head.metadata["label_note"] = TYPE_NOTE
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
                "generator": "cartag.training.placeholders",
                "n": n_placeholders,
                "seed": seed,
                "families": list(FAMILIES),
            },
            "recolored": {
                "generator": "cartag.training.recolor",
                "per_color": recolored_per_color,
                "seed": seed,
            },
            "split_rule": SPLIT_RULE,
            "type_label_note": TYPE_NOTE,
            "type_labels_sha256": hashlib.sha256(TYPE_LABELS_PATH.read_bytes()).hexdigest(),
            "command": "python -m cartag.training.bundled --data <vcr-train> --out <dir>"
            + ("" if finetune is None else " --backbone-weights <finetune .npz>"),
            **({} if finetune is None else {"backbone_finetune": finetune}),
        },
        "created": now.isoformat(timespec="seconds"),
    }
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
    parser.add_argument("--data", type=Path, required=True, help="the vcr-train folder")
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
    )
    print(f"wrote {args.out} ({config['version']})")
    print((args.out / "MODEL_CARD.md").read_text(encoding="utf-8"))


if __name__ == "__main__":
    main()
