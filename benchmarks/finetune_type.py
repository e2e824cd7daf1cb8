"""Experiment: does fine-tuning the whole backbone beat the frozen-feature type head?

The shipped type head is a linear head on frozen EfficientNet-Lite0 embeddings
(``python -m cartag.training.bundled``). This script fine-tunes every layer of
lite0 plus a linear type head on the same training split (vcr-train photos with
the cleaned labels of ``cartag/training/type_labels.csv``, plus the 420 generated
placeholders) and reports the macro recall on the same held-out split after
every epoch. Nothing is saved: it measures how much a fine-tuned backbone would
give before anyone builds the plumbing to ship one.

Recipe: images kept at 256 px, random 224-256 px crops resized to 224 and
horizontal flips; AdamW (backbone 2e-4, head 2e-3, weight decay 1e-4), one-cycle
schedule, batch 32, class-balanced cross-entropy with label smoothing 0.1,
dropout 0.2 before the head, batch-norm statistics frozen (ImageNet's). The
held-out split is only scored, never used to choose anything; read the last
epoch, not the best one.

Usage (2 CPU cores: about 3 minutes per epoch)::

    .venv/bin/python -m benchmarks.finetune_type [--epochs 5] [--data ../shared/data/vcr-train]
"""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from cartag.models.backbone import IMAGENET_MEAN, IMAGENET_STD, Backbone
from cartag.training.dataset import holdout_mask, read_labels
from cartag.training.fit import balanced_accuracy
from cartag.training.placeholders import generate_placeholders
from cartag.training.type_head import read_type_labels
from cartag.vocab import IMAGE_TYPES

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "vcr-train"
STORE = 256  # side the images are kept at, so that crops can move
SIZE = 224


def load_corpus(data: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Images, type labels and held-out mask in the bundled model's split.

    Returns:
        uint8 (N, STORE, STORE, 3) images, int64 (N,) labels, bool (N,) held-out.
    """
    samples = read_labels(data)
    labels = read_type_labels()
    placeholders = generate_placeholders(420, seed=0)
    keys = [s.path for s in samples] + [p.id for p in placeholders]
    strata = [s.color for s in samples] + [p.family for p in placeholders]
    images, y = [], []
    for sample in samples:
        with Image.open(sample.file) as image:
            images.append(_square(image))
        y.append(IMAGE_TYPES.index(labels[sample.path].type))
    for placeholder in placeholders:
        images.append(_square(placeholder.image))
        y.append(IMAGE_TYPES.index("Placeholder"))
    return np.stack(images), np.asarray(y, dtype=np.int64), holdout_mask(keys, strata)


def _square(image: Image.Image, side: int = STORE) -> np.ndarray:
    resized = image.convert("RGB").resize((side, side), Image.Resampling.BILINEAR)
    return np.asarray(resized, dtype=np.uint8)


def to_tensor(batch: np.ndarray) -> torch.Tensor:
    """uint8 (B, S, S, 3) -> float32 (B, 3, S, S), ImageNet-normalised."""
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    return (torch.from_numpy(batch).permute(0, 3, 1, 2).float() / 255 - mean) / std


def augment(images: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A random 224-256 px crop of each image, resized to 224, flipped half the time."""
    out = np.empty((len(images), SIZE, SIZE, 3), dtype=np.uint8)
    for k, image in enumerate(images):
        side = int(rng.integers(SIZE, STORE + 1))
        x, y = rng.integers(0, STORE - side + 1, size=2)
        crop = Image.fromarray(image[y : y + side, x : x + side])
        pixels = np.asarray(crop.resize((SIZE, SIZE), Image.Resampling.BILINEAR))
        out[k] = pixels[:, ::-1] if rng.random() < 0.5 else pixels
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--data", type=Path, default=SHARED)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    if not args.data.is_dir():
        raise SystemExit(f"no photos at {args.data}; pass --data <vcr-train folder>")

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    model = Backbone.load("efficientnet-lite0", threads=args.threads)._model
    for param in model.parameters():
        param.requires_grad_(True)
    images, y, held_out = load_corpus(args.data)
    train, test = np.flatnonzero(~held_out), np.flatnonzero(held_out)
    test_images = np.stack([_square(Image.fromarray(images[i]), SIZE) for i in test])

    head = torch.nn.Linear(1280, len(IMAGE_TYPES))
    counts = np.bincount(y[train], minlength=len(IMAGE_TYPES))
    weights = torch.tensor(counts.sum() / (len(counts) * counts), dtype=torch.float32)
    loss_fn = torch.nn.CrossEntropyLoss(weight=weights, label_smoothing=0.1)
    batch_size = 32
    steps = args.epochs * math.ceil(len(train) / batch_size)
    groups = [{"params": model.parameters(), "lr": 2e-4}, {"params": head.parameters(), "lr": 2e-3}]
    optimizer = torch.optim.AdamW(groups, weight_decay=1e-4)
    schedule = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=[2e-4, 2e-3], total_steps=steps, pct_start=0.15
    )

    def embed(x: torch.Tensor) -> torch.Tensor:
        return model.extract_features(x).mean(dim=(2, 3))  # (B, 1280)

    started = time.time()
    print(f"train {len(train)}, held-out {len(test)} (Dealer, Stock, Placeholder recall)")
    for epoch in range(args.epochs):
        model.train()
        for module in model.modules():  # ImageNet batch-norm statistics stay
            if isinstance(module, torch.nn.BatchNorm2d):
                module.eval()
        order = rng.permutation(train)
        for start in range(0, len(order), batch_size):
            rows = order[start : start + batch_size]
            features = embed(to_tensor(augment(images[rows], rng)))
            logits = head(torch.nn.functional.dropout(features, 0.2, training=True))
            loss = loss_fn(logits, torch.from_numpy(y[rows]))
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            schedule.step()
        model.eval()
        with torch.inference_mode():
            pred = np.concatenate(
                [
                    head(embed(to_tensor(test_images[i : i + 64]))).argmax(1).numpy()
                    for i in range(0, len(test), 64)
                ]
            )
        truth = y[test]
        mr = balanced_accuracy(truth, pred)
        recalls = [float(np.mean(pred[truth == k] == k)) for k in range(len(IMAGE_TYPES))]
        print(
            f"epoch {epoch + 1}: {time.time() - started:.0f} s, held-out type macro recall "
            f"{mr:.4f} ({', '.join(f'{r:.3f}' for r in recalls)})",
            flush=True,
        )


if __name__ == "__main__":
    main()
