"""Fine-tuning the backbone: a short real run, the weights file, and the bundled build's check."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from cartag.models.backbone import Backbone
from cartag.training.bundled.build import check_finetune
from cartag.training.bundled.finetune import (
    FINETUNE_FORMAT,
    Recipe,
    TrainingImages,
    augment,
    finetune,
    save_weights,
)
from cartag.training.datasets.dataset import SPLIT_RULE


def _images(n: int = 8, side: int = 232) -> TrainingImages:
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, size=(n, side, side, 3), dtype=np.uint8)
    # Placeholder-like rows are flat, the others noisy; the last two rows are held out.
    pixels[::3] = 240
    type_idx = np.array([2 if i % 3 == 0 else i % 2 for i in range(n)], dtype=np.int64)
    color_idx = np.where(type_idx == 2, -1, np.arange(n) % 12).astype(np.int64)
    holdout = np.zeros(n, dtype=bool)
    holdout[-2:] = True
    return TrainingImages(pixels, type_idx, color_idx, holdout, "0" * 64)


def test_augment_crops_to_the_network_size() -> None:
    images = _images(3).pixels
    out = augment(images, 224, np.random.default_rng(1))
    assert out.shape == (3, 224, 224, 3) and out.dtype == np.uint8
    again = augment(images, 224, np.random.default_rng(1))
    np.testing.assert_array_equal(out, again)


@pytest.mark.slow
def test_a_short_finetune_changes_the_network_and_saves_it(tmp_path: Path) -> None:
    backbone = Backbone.load("efficientnet-lite0", threads=2)
    base_id = backbone.backbone_id
    before = {k: v.clone() for k, v in backbone.network.state_dict().items()}
    images = _images()
    # Row 1 (Stock, Blue) becomes a studio shot on white, which the recipe restages.
    images.pixels[1] = 250
    images.pixels[1, 60:170, 40:190] = (20, 40, 160)
    recipe = Recipe(epochs=1, batch_size=3, store_size=232, restage_stock=1.0)
    log = finetune(backbone, images, recipe)
    assert log["restageable_stock"] == 1
    assert [e["epoch"] for e in log["epochs"]] == [1]
    assert np.isfinite(log["epochs"][0]["loss"])
    assert set(log["held_out"]) == {"type_macro_recall", "color_accuracy"}
    after = backbone.network.state_dict()
    assert not torch.equal(before["_conv_stem.weight"], after["_conv_stem.weight"])
    # Batch-norm statistics stay ImageNet's.
    assert torch.equal(before["_bn0.running_mean"], after["_bn0.running_mean"])
    assert not any(p.requires_grad for p in backbone.network.parameters())

    path = tmp_path / "backbone.npz"
    backbone_id = save_weights(backbone, before, base_id, path, {"variant": "efficientnet-lite0"})
    sidecar = json.loads(path.with_suffix(".json").read_text())
    assert sidecar["format"] == FINETUNE_FORMAT and sidecar["backbone_id"] == backbone_id
    with np.load(path) as data:
        # Batch-norm statistics and the ImageNet classifier did not change: not stored.
        assert not any("running" in k or "_fc." in k for k in data.files)
    loaded = Backbone.load("efficientnet-lite0", weights=path)
    assert loaded.backbone_id == backbone_id
    x = np.random.default_rng(2).normal(size=(2, 3, 224, 224)).astype(np.float32)
    a, b = loaded.embed(x), backbone.embed(x)
    # int8 deltas: the embeddings agree to their rounding.
    cosine = (a * b).sum(axis=1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)
    assert cosine.min() > 0.999


def _sidecar(tmp_path: Path, **overrides: object) -> Path:
    weights = tmp_path / "backbone.npz"
    weights.write_bytes(b"")
    meta = {
        "format": FINETUNE_FORMAT,
        "variant": "efficientnet-lite0",
        "split_rule": SPLIT_RULE,
        "backbone_id": "efficientnet-lite0-ft@00000000",
        "recipe": {"epochs": 5},
        "secret": "not copied",
        **overrides,
    }
    weights.with_suffix(".json").write_text(json.dumps(meta))
    return weights


def test_check_finetune_keeps_the_record(tmp_path: Path) -> None:
    record = check_finetune(_sidecar(tmp_path), "efficientnet-lite0")
    assert record == {"backbone_id": "efficientnet-lite0-ft@00000000", "recipe": {"epochs": 5}}


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"variant": "efficientnet-lite2"}, "not 'efficientnet-lite0'"),
        ({"split_rule": "random 80/20"}, "another held-out split"),
    ],
)
def test_check_finetune_refuses_other_weights(
    tmp_path: Path, overrides: dict[str, object], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        check_finetune(_sidecar(tmp_path, **overrides), "efficientnet-lite0")


def test_check_finetune_needs_the_sidecar(tmp_path: Path) -> None:
    weights = tmp_path / "backbone.npz"
    weights.write_bytes(b"")
    with pytest.raises(ValueError, match="missing or unreadable"):
        check_finetune(weights, "efficientnet-lite0")
