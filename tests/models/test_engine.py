"""Backbone engines: ONNX export, cache, parity with torch, fallback."""

from __future__ import annotations

import logging
import threading
import time
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import cartag.models.backbone as backbone_module
import cartag.models.engine as engine_module
from cartag.errors import ModelError
from cartag.models.backbone import PREPROCESS_ID, Backbone
from cartag.models.classifier import EmbeddingClassifier, load_classifier
from cartag.models.color_features import color_features_batch
from cartag.models.engine import (
    Engine,
    InferencePlan,
    OnnxEngine,
    TorchEngine,
    check_parity,
    export_onnx,
    inference_plan,
    load_onnx_engine,
    physical_cores,
)
from cartag.settings import Settings
from tests.support.images import real_photos

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def torch_engine(backbone: Backbone) -> TorchEngine:
    return TorchEngine(backbone._model)


@pytest.fixture(scope="module")
def onnx_bytes(backbone: Backbone) -> bytes:
    """The one real export of this module (the others reuse its bytes: exports are slow)."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # nothing may escape the exporter
        return export_onnx(backbone._model, backbone.input_size)


@pytest.fixture
def count_exports(monkeypatch: pytest.MonkeyPatch, onnx_bytes: bytes) -> list[int]:
    """Replaces the exporter by one that records its calls and returns the real bytes."""
    calls: list[int] = []

    def counting(model: torch.nn.Module, input_size: int) -> bytes:
        calls.append(input_size)
        return onnx_bytes

    monkeypatch.setattr(engine_module, "export_onnx", counting)
    return calls


class _WrongNetwork(torch.nn.Module):
    """Right input and output shapes, wrong numbers: what a stale cache could hold."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 1280, kernel_size=32, stride=32)

    def extract_features(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.conv(x))


def _cache_path(tmp_path: Path, backbone: Backbone) -> Path:
    return tmp_path / "onnx" / f"{backbone.backbone_id}-{PREPROCESS_ID}.onnx"


def test_onnx_matches_torch_on_real_photos(
    embedding_classifier: EmbeddingClassifier,
    torch_engine: TorchEngine,
    onnx_bytes: bytes,
    shared_data: Path,
) -> None:
    backbone = embedding_classifier.backbone
    images = [Image.open(p) for p in real_photos(shared_data, 24)]
    batch = backbone.preprocess(images)
    onnx = OnnxEngine(onnx_bytes)
    want, got = torch_engine.embed(batch), onnx.embed(batch)
    assert got.shape == want.shape == (24, backbone.embedding_dim) and got.dtype == np.float32
    assert float(np.abs(got - want).max()) < 1e-3
    # The heads see the same thing: every type and color decision is unchanged.
    features = color_features_batch(images)  # the color head reads [embedding, color features]
    for head, a, b in (
        (embedding_classifier.type_head, got, want),
        (
            embedding_classifier.color_head,
            np.concatenate([got, features], axis=1),
            np.concatenate([want, features], axis=1),
        ),
    ):
        np.testing.assert_array_equal(
            head.predict_proba(a).argmax(axis=1), head.predict_proba(b).argmax(axis=1)
        )
    # Dynamic batch axis: one image alone gives the same embedding as inside a batch.
    np.testing.assert_allclose(onnx.embed(batch[3:4])[0], got[3], atol=1e-4)


def test_export_emits_no_warnings(onnx_bytes: bytes) -> None:
    assert len(onnx_bytes) > 1_000_000  # the weights are in it (~13 MB for lite0)


def test_export_is_cached_and_reused(
    backbone: Backbone, torch_engine: TorchEngine, tmp_path: Path, count_exports: list[int]
) -> None:
    path = _cache_path(tmp_path, backbone)

    def load() -> OnnxEngine:
        return load_onnx_engine(
            backbone._model, backbone.input_size, reference=torch_engine, cache_path=path
        )

    first = load()
    assert path.is_file() and count_exports == [224]
    assert not [p for p in path.parent.iterdir() if p != path]  # no temp files left behind
    mtime = path.stat().st_mtime_ns
    second = load()
    assert count_exports == [224] and path.stat().st_mtime_ns == mtime
    x = engine_module.smoke_input(224)
    np.testing.assert_array_equal(first.embed(x), second.embed(x))


@pytest.mark.parametrize("content", [b"", b"not an onnx model", b"\x08\x07" + b"\x00" * 64])
def test_corrupt_cache_is_exported_again(
    backbone: Backbone,
    torch_engine: TorchEngine,
    tmp_path: Path,
    count_exports: list[int],
    content: bytes,
    caplog: pytest.LogCaptureFixture,
) -> None:
    path = _cache_path(tmp_path, backbone)
    path.parent.mkdir(parents=True)
    path.write_bytes(content)
    with caplog.at_level(logging.WARNING, logger="cartag.models.engine"):
        engine = load_onnx_engine(
            backbone._model, backbone.input_size, reference=torch_engine, cache_path=path
        )
    assert count_exports == [224] and "exporting it again" in caplog.text
    assert path.stat().st_size > 1_000_000
    check_parity(engine, torch_engine, backbone.input_size)


def test_cached_model_that_disagrees_with_torch_is_exported_again(
    backbone: Backbone,
    torch_engine: TorchEngine,
    tmp_path: Path,
    count_exports: list[int],
) -> None:
    path = _cache_path(tmp_path, backbone)
    path.parent.mkdir(parents=True)
    wrong = export_onnx(_WrongNetwork().eval(), backbone.input_size)
    path.write_bytes(wrong)
    with pytest.raises(ModelError, match="differ from torch"):
        check_parity(OnnxEngine(path), torch_engine, backbone.input_size)
    load_onnx_engine(backbone._model, backbone.input_size, reference=torch_engine, cache_path=path)
    assert count_exports == [224]
    check_parity(OnnxEngine(path), torch_engine, backbone.input_size)


def test_parity_check_rejects_a_different_network(
    torch_engine: TorchEngine, onnx_bytes: bytes, monkeypatch: pytest.MonkeyPatch
) -> None:
    engine = OnnxEngine(onnx_bytes, threads=1)
    assert check_parity(engine, torch_engine, 224) < 1e-3
    monkeypatch.setattr(engine_module, "PARITY_ATOL", 1e-12)
    with pytest.raises(ModelError, match="differ from torch"):
        check_parity(engine, torch_engine, 224)


def test_unloadable_model_is_a_model_error() -> None:
    with pytest.raises(ModelError, match="onnxruntime cannot load"):
        OnnxEngine(b"garbage")


def test_backbone_falls_back_to_torch(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(*args: object, **kwargs: object) -> OnnxEngine:
        raise ModelError("onnxruntime is not installed")

    monkeypatch.setattr(backbone_module, "load_onnx_engine", broken)
    with caplog.at_level(logging.WARNING, logger="cartag.models.backbone"):
        backbone = Backbone.load(engine="onnx", cache_dir=tmp_path)
    assert backbone.engine.name == "torch"
    assert "running the backbone with torch" in caplog.text
    assert backbone.embed(engine_module.smoke_input(224)).shape == (2, 1280)


def test_backbone_falls_back_when_parity_fails(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, count_exports: list[int]
) -> None:
    monkeypatch.setattr(engine_module, "PARITY_ATOL", 0.0)
    with caplog.at_level(logging.WARNING, logger="cartag.models.backbone"):
        backbone = Backbone.load(engine="onnx", cache_dir=None)
    assert backbone.engine.name == "torch" and "differ from torch" in caplog.text


def test_settings_select_the_engine_and_cache(
    tmp_path: Path, embedding_classifier: EmbeddingClassifier, count_exports: list[int]
) -> None:
    settings = Settings(data_dir=tmp_path, engine="onnx", inference_batch_size=4)
    classifier = load_classifier(settings)
    assert isinstance(classifier, EmbeddingClassifier)
    assert classifier.backbone.engine.name == "onnx" and classifier.batch_size == 4
    cached = list((tmp_path / "cache" / "onnx").glob("*.onnx"))
    bundled_id = embedding_classifier.backbone_id
    assert [p.name for p in cached] == [f"{bundled_id}-{PREPROCESS_ID}.onnx"]
    torch_backbone = embedding_classifier.backbone
    torch_classifier = EmbeddingClassifier(
        Backbone(torch_backbone._model, torch_backbone.variant, torch_backbone.backbone_id),
        classifier.type_head,
        classifier.color_head,
        classifier.version,
        color_features=classifier.color_features,
    )
    assert torch_classifier.backbone.engine.name == "torch"
    images = [Image.new("RGB", (320, 240), (20 * i, 80, 160)) for i in range(5)]
    for a, b in zip(classifier.predict(images), torch_classifier.predict(images), strict=True):
        assert (a.image_type, a.color) == (b.image_type, b.color)
        assert abs(a.confidence - b.confidence) < 1e-3


def test_physical_cores() -> None:
    assert physical_cores() >= 1


def test_inference_plan() -> None:
    cores = physical_cores()
    # ONNX: one single-threaded run per core; torch: one run on the default threads.
    assert inference_plan("onnx") == (InferencePlan(cores, 1) if cores > 1 else InferencePlan(1, 0))
    assert inference_plan("torch") == InferencePlan(1, 0)
    assert inference_plan("onnx", workers=1) == InferencePlan(1, 0)
    assert inference_plan("onnx", workers=1, threads=3) == InferencePlan(1, 3)
    assert inference_plan("onnx", workers=2, threads=4) == InferencePlan(2, 2)
    assert inference_plan("torch", workers=3, threads=2) == InferencePlan(3, 1)


class _SlowEngine(Engine):
    """Counts how many embed calls overlap."""

    name = "slow"

    def __init__(self) -> None:
        self.running = 0
        self.most = 0
        self._lock = threading.Lock()

    def embed(self, batch: np.ndarray) -> np.ndarray:
        with self._lock:
            self.running += 1
            self.most = max(self.most, self.running)
        time.sleep(0.05)
        with self._lock:
            self.running -= 1
        return np.zeros((batch.shape[0], 4), dtype=np.float32)


@pytest.mark.parametrize("concurrency", [1, 2])
def test_backbone_bounds_concurrent_embeds(backbone: Backbone, concurrency: int) -> None:
    engine = _SlowEngine()
    limited = Backbone(
        backbone._model, backbone.variant, backbone.backbone_id, engine, concurrency=concurrency
    )
    batch = np.zeros((1, 3, 224, 224), dtype=np.float32)
    with ThreadPoolExecutor(max_workers=4) as pool:
        list(pool.map(lambda _: limited.embed(batch), range(8)))
    assert engine.most == concurrency
    with pytest.raises(ValueError, match="concurrency"):
        Backbone(backbone._model, backbone.variant, backbone.backbone_id, engine, concurrency=0)
