"""Backbone loading, preprocessing and embedding."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from cartag.errors import ModelError
from cartag.models.backbone import IMAGENET_MEAN, IMAGENET_STD, Backbone, to_rgb
from cartag.models.weights_delta import encode_delta
from tests.support.images import real_photos

pytestmark = pytest.mark.slow

# ImageNet classes a car photo's top-5 should hit: sports car, convertible, cab,
# minivan, jeep, pickup, racer, beach wagon, limousine, grille, car wheel, ...
CAR_CLASSES = {817, 511, 468, 656, 609, 717, 751, 436, 627, 581, 479, 661, 705, 734, 867, 864}


def _expected(value: float) -> np.ndarray:
    return (value - np.asarray(IMAGENET_MEAN)) / np.asarray(IMAGENET_STD)


def test_identity(packaged_backbone: Backbone) -> None:
    backbone = packaged_backbone
    assert backbone.backbone_id == "efficientnet-lite0@57934424"
    assert backbone.weights_path is None
    assert backbone.input_size == 224
    assert backbone.embedding_dim == 1280


@pytest.mark.parametrize("mode", ["RGB", "L", "P", "CMYK", "I;16", "RGBA", "LA", "1", "F"])
def test_preprocess_any_mode(backbone: Backbone, mode: str) -> None:
    image = Image.new("RGB", (333, 120), (200, 40, 40)).convert(mode)
    batch = backbone.preprocess([image, image])
    assert batch.shape == (2, 3, 224, 224) and batch.dtype == np.float32
    assert np.isfinite(batch).all()


def test_preprocess_normalisation(backbone: Backbone) -> None:
    white = Image.new("RGB", (640, 480), (255, 255, 255))
    black = Image.new("RGB", (100, 300), (0, 0, 0))
    batch = backbone.preprocess([white, black])
    np.testing.assert_allclose(batch[0, :, 5, 7], _expected(1.0), rtol=1e-5)
    np.testing.assert_allclose(batch[1, :, 100, 100], _expected(0.0), rtol=1e-5)


def test_normalize_is_the_float32_formula_for_every_level_of_every_channel(
    backbone: Backbone,
) -> None:
    # Each channel gets its own levels (and the channels differ), so a lookup that mixed
    # up channels or positions would show.
    rng = np.random.default_rng(3)
    pixels = rng.integers(0, 256, (2, 16, 32, 3), dtype=np.uint8)
    pixels[0, :8] = np.arange(256, dtype=np.uint8).reshape(8, 32, 1)
    mean = np.asarray(IMAGENET_MEAN, dtype=np.float32)
    std = np.asarray(IMAGENET_STD, dtype=np.float32)
    want = ((pixels.astype(np.float32) / 255.0 - mean) / std).transpose(0, 3, 1, 2)
    got = backbone.normalize(pixels)
    assert got.shape == (2, 3, 16, 32) and got.dtype == np.float32
    assert got.flags["C_CONTIGUOUS"]
    np.testing.assert_array_equal(got, want)


def test_preprocess_keeps_borders(backbone: Backbone) -> None:
    # A white frame must survive preprocessing (a centre crop would cut it away).
    image = Image.new("RGB", (400, 300), (255, 255, 255))
    image.paste((0, 0, 0), (60, 60, 340, 240))
    batch = backbone.preprocess([image])
    np.testing.assert_allclose(batch[0, :, 2, 2], _expected(1.0), rtol=1e-5)
    np.testing.assert_allclose(batch[0, :, 112, 112], _expected(0.0), rtol=1e-5)


def test_transparency_is_composited_on_white() -> None:
    clear = Image.new("RGBA", (10, 10), (255, 0, 0, 0))
    assert to_rgb(clear).getpixel((5, 5)) == (255, 255, 255)


def test_embed_shapes(backbone: Backbone) -> None:
    images = [Image.new("RGB", (300, 200), (i * 40, 90, 200)) for i in range(3)]
    emb = backbone.embed_images(images)
    assert emb.shape == (3, 1280) and emb.dtype == np.float32
    np.testing.assert_allclose(backbone.embed_images(images[:1])[0], emb[0], rtol=1e-4, atol=1e-5)
    assert backbone.embed(np.zeros((0, 3, 224, 224), dtype=np.float32)).shape == (0, 1280)
    with pytest.raises(ValueError, match="batch"):
        backbone.embed(np.zeros((1, 3, 100, 100), dtype=np.float32))


def test_imagenet_logits_see_cars(packaged_backbone: Backbone, shared_data: Path) -> None:
    # Guards the weight loading: wrong or partly loaded weights still give embeddings.
    files = real_photos(shared_data, 6)
    images = [Image.open(f) for f in files]
    x = torch.from_numpy(packaged_backbone.preprocess(images))
    with torch.inference_mode():
        logits = packaged_backbone.network(x)
    top5 = logits.topk(5).indices.tolist()
    hits = sum(bool(set(row) & CAR_CLASSES) for row in top5)
    assert hits >= 5, top5


def test_unknown_variant() -> None:
    with pytest.raises(ModelError, match="unknown backbone"):
        Backbone.load("efficientnet-b7")


def _delta_file(
    backbone: Backbone, path: Path, *, base_id: str | None = None, bump: str = "_conv_head.weight"
) -> tuple[Path, dict[str, torch.Tensor]]:
    """A delta file that adds 0.01 to one weight tensor; returns it and the tuned state."""
    base = backbone.network.state_dict()
    tuned = {name: tensor.clone() for name, tensor in base.items()}
    tuned[bump] = tuned[bump] + 0.01
    path.write_bytes(encode_delta(base, tuned, base_id or backbone.backbone_id))
    return path, tuned


def test_finetuned_weights_load_with_their_own_id(
    packaged_backbone: Backbone, tmp_path: Path
) -> None:
    path, tuned = _delta_file(packaged_backbone, tmp_path / "backbone.npz")
    loaded = Backbone.load("efficientnet-lite0", weights=path)
    assert loaded.backbone_id.startswith("efficientnet-lite0-ft@")
    assert loaded.backbone_id != packaged_backbone.backbone_id
    assert loaded.weights_path == path
    state = loaded.network.state_dict()
    torch.testing.assert_close(state["_conv_head.weight"], tuned["_conv_head.weight"])
    torch.testing.assert_close(state["_fc.weight"], tuned["_fc.weight"])
    images = [Image.new("RGB", (300, 200), (200, 40 * i, 90)) for i in range(2)]
    assert not np.allclose(
        loaded.embed_images(images), packaged_backbone.embed_images(images), atol=1e-4
    )


def test_finetuned_weights_missing_or_wrong(packaged_backbone: Backbone, tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="file is missing"):
        Backbone.load("efficientnet-lite0", weights=tmp_path / "none.npz")
    garbage = tmp_path / "garbage.npz"
    garbage.write_bytes(b"not a zip file")
    with pytest.raises(ModelError, match="finetune"):
        Backbone.load("efficientnet-lite0", weights=garbage)
    other_base, _ = _delta_file(
        packaged_backbone, tmp_path / "other.npz", base_id="efficientnet-lite0@00000000"
    )
    with pytest.raises(ModelError, match="patches efficientnet-lite0@00000000"):
        Backbone.load("efficientnet-lite0", weights=other_base)
    lite0, _ = _delta_file(packaged_backbone, tmp_path / "lite0.npz")
    with pytest.raises(ModelError, match="cannot be used"):
        Backbone.load("efficientnet-lite1", weights=lite0)


@pytest.mark.parametrize("variant", ["efficientnet-lite1", "efficientnet-lite2"])
def test_variant_table_matches_the_networks(variant: str) -> None:
    # The ONNX path takes input size and embedding width from the table, not the network.
    loaded = Backbone.load(variant)
    conv_head = loaded.network._conv_head
    assert isinstance(conv_head, torch.nn.Conv2d)
    assert conv_head.out_channels == loaded.embedding_dim
    image = Image.new("RGB", (300, 200), (90, 120, 200))
    assert loaded.embed_images([image]).shape == (1, loaded.embedding_dim)
    assert loaded.input_size == {"efficientnet-lite1": 240, "efficientnet-lite2": 260}[variant]


def test_bad_weights_fail_on_the_onnx_engine_too(
    packaged_backbone: Backbone, tmp_path: Path
) -> None:
    # A fine-tune that cannot be loaded is an error, not a silent torch fallback.
    with pytest.raises(ModelError, match="file is missing"):
        Backbone.load(engine="onnx", cache_dir=tmp_path, weights=tmp_path / "none.npz")
    garbage = tmp_path / "garbage.npz"
    garbage.write_bytes(b"not a zip file")
    with pytest.raises(ModelError, match="cannot be used"):
        Backbone.load(engine="onnx", cache_dir=tmp_path, weights=garbage)
    assert not list(tmp_path.rglob("*.onnx"))
