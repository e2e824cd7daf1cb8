"""Backbone engines: ONNX export, cache, parity with torch, fallback."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import threading
import time
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from PIL import Image

import cartag.models.engine as engine_module
import cartag.models.onnx_files as onnx_files
from cartag.errors import ModelError
from cartag.models.backbone import PREPROCESS_ID, Backbone, network_identity
from cartag.models.classifier import EmbeddingClassifier, load_classifier, settings_plan
from cartag.models.color_features import color_features_batch
from cartag.models.engine import (
    METADATA_NETWORK,
    METADATA_REFERENCE,
    Engine,
    InferencePlan,
    OnnxEngine,
    check_parity,
    decode_reference,
    encode_reference,
    inference_plan,
    load_cached_onnx,
    physical_cores,
)
from cartag.models.onnx_export import export_onnx
from cartag.settings import Settings
from tests.support.images import real_photos

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def torch_backbone(backbone: Backbone) -> Backbone:
    """The bundled model's network on the torch engine (the shared one runs ONNX)."""
    return Backbone.load(backbone.variant, weights=backbone.weights_path)


@pytest.fixture(scope="module")
def torch_engine(torch_backbone: Backbone) -> Engine:
    return torch_backbone.engine


@pytest.fixture(scope="module")
def network(torch_backbone: Backbone) -> str:
    return network_identity(
        torch_backbone.variant, torch_backbone.weights_path, torch_backbone.backbone_id
    )


@pytest.fixture(scope="module")
def onnx_bytes(torch_backbone: Backbone, network: str) -> bytes:
    """The one in-process export of this module (the others reuse its bytes: exports are slow)."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # nothing may escape the exporter
        return export_onnx(torch_backbone.network, torch_backbone.input_size, network)


@pytest.fixture
def count_exports(monkeypatch: pytest.MonkeyPatch, onnx_bytes: bytes) -> list[str]:
    """Replaces the child-process export by one that records its calls and returns the bytes."""
    calls: list[str] = []

    def counting(variant: str, weights: Path | None, network: str) -> bytes:
        calls.append(network)
        return onnx_bytes

    monkeypatch.setattr(onnx_files, "export_in_child", counting)
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


def _load_onnx(backbone: Backbone, cache_dir: Path | None) -> Backbone:
    return Backbone.load(
        backbone.variant, engine="onnx", cache_dir=cache_dir, weights=backbone.weights_path
    )


def _with_metadata(data: bytes, **changes: str | None) -> bytes:
    """``data`` with metadata entries replaced (a value of None removes the entry)."""
    proto = onnx.load_model_from_string(data)
    props = {p.key: p.value for p in proto.metadata_props}
    props.update({k.replace("_", "."): v for k, v in changes.items()})
    del proto.metadata_props[:]
    for key, value in props.items():
        if value is not None:
            entry = proto.metadata_props.add()
            entry.key, entry.value = key, value
    return bytes(proto.SerializeToString())


def test_onnx_matches_torch_on_real_photos(
    embedding_classifier: EmbeddingClassifier,
    torch_engine: Engine,
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


def test_export_records_the_network_and_torch_output(
    onnx_bytes: bytes, network: str, torch_engine: Engine
) -> None:
    engine = OnnxEngine(onnx_bytes)
    assert engine.metadata[METADATA_NETWORK] == network
    assert network.startswith("efficientnet-lite0-ft@") and " on efficientnet-lite0@" in network
    reference = decode_reference(engine.metadata[METADATA_REFERENCE])
    np.testing.assert_array_equal(reference, torch_engine.embed(engine_module.smoke_input(224)))
    assert check_parity(engine, reference, 224) < 1e-3


def test_export_is_cached_and_reused(
    torch_backbone: Backbone, tmp_path: Path, count_exports: list[str], network: str
) -> None:
    path = _cache_path(tmp_path, torch_backbone)
    first = _load_onnx(torch_backbone, tmp_path)
    assert first.engine.name == "onnx" and path.is_file() and count_exports == [network]
    assert not [p for p in path.parent.iterdir() if p != path]  # no temp files left behind
    mtime = path.stat().st_mtime_ns
    second = _load_onnx(torch_backbone, tmp_path)
    assert count_exports == [network] and path.stat().st_mtime_ns == mtime
    assert second.backbone_id == torch_backbone.backbone_id
    x = engine_module.smoke_input(224)
    np.testing.assert_array_equal(first.embed(x), second.embed(x))


def _corruptions(onnx_bytes: bytes, network: str) -> dict[str, tuple[bytes, str]]:
    reference = decode_reference(OnnxEngine(onnx_bytes).metadata[METADATA_REFERENCE])
    ours, doubled = encode_reference(reference), encode_reference(reference * 2)
    wrong = export_onnx(_WrongNetwork().eval(), 224, network)
    return {
        "empty": (b"", "cannot load"),
        "garbage": (b"not an onnx model", "cannot load"),
        "truncated": (onnx_bytes[: len(onnx_bytes) // 2], "cannot load"),
        # A cache written by an older cartag, or exported from other weights.
        "no metadata": (_with_metadata(onnx_bytes, cartag_network=None), "exported from an"),
        "other network": (
            _with_metadata(onnx_bytes, cartag_network="efficientnet-lite0@00000000"),
            "exported from efficientnet-lite0@00000000",
        ),
        "no reference": (_with_metadata(onnx_bytes, cartag_reference=None), "no usable"),
        "bad reference": (_with_metadata(onnx_bytes, cartag_reference="@@"), "no usable"),
        # ONNX Runtime computes something else than torch did at export time.
        "reference differs": (
            _with_metadata(onnx_bytes, cartag_reference=doubled),
            "differ from torch",
        ),
        # Other weights under this network's name and torch output.
        "wrong weights": (_with_metadata(wrong, cartag_reference=ours), "differ from torch"),
    }


@pytest.mark.parametrize(
    "case",
    [
        "empty",
        "garbage",
        "truncated",
        "no metadata",
        "other network",
        "no reference",
        "bad reference",
        "reference differs",
        "wrong weights",
    ],
)
def test_unusable_cache_is_exported_again(
    torch_backbone: Backbone,
    onnx_bytes: bytes,
    network: str,
    tmp_path: Path,
    count_exports: list[str],
    caplog: pytest.LogCaptureFixture,
    case: str,
) -> None:
    content, reason = _corruptions(onnx_bytes, network)[case]
    with pytest.raises(ModelError, match=reason):
        load_cached_onnx(content, network, 224)
    path = _cache_path(tmp_path, torch_backbone)
    path.parent.mkdir(parents=True)
    path.write_bytes(content)
    with caplog.at_level(logging.WARNING, logger="cartag.models.backbone"):
        loaded = _load_onnx(torch_backbone, tmp_path)
    assert count_exports == [network] and "exporting it again" in caplog.text
    assert loaded.engine.name == "onnx" and path.read_bytes() == onnx_bytes
    load_cached_onnx(path, network, 224)


def test_parity_check_rejects_a_different_network(
    torch_engine: Engine, onnx_bytes: bytes, monkeypatch: pytest.MonkeyPatch
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
    def broken(variant: str, weights: Path | None, network: str) -> bytes:
        raise ModelError("exporting the backbone to ONNX failed: no space left on device")

    monkeypatch.setattr(onnx_files, "export_in_child", broken)
    with caplog.at_level(logging.WARNING, logger="cartag.models.backbone"):
        backbone = Backbone.load(engine="onnx", cache_dir=tmp_path)
    assert backbone.engine.name == "torch"
    assert "no space left on device); running the backbone with torch" in caplog.text
    assert backbone.embed(engine_module.smoke_input(224)).shape == (2, 1280)


def test_child_export_then_parity_failure_falls_back(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, tmp_path: Path
) -> None:
    # The real child process exports; this process checks what it wrote, refuses it,
    # and caches nothing.
    monkeypatch.setattr(engine_module, "PARITY_ATOL", 0.0)
    with caplog.at_level(logging.WARNING, logger="cartag.models.backbone"):
        backbone = Backbone.load(engine="onnx", cache_dir=tmp_path)
    assert backbone.engine.name == "torch" and "differ from torch" in caplog.text
    assert not list(tmp_path.rglob("*.onnx"))


def test_child_export_errors_are_model_errors(tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.npz"
    garbage.write_bytes(b"not a zip file")
    with pytest.raises(ModelError, match="export.*failed: the fine-tuned weights .* cannot be"):
        onnx_files.export_in_child("efficientnet-lite0", garbage, "x")


def test_onnx_backbone_holds_no_torch_network(torch_backbone: Backbone, backbone: Backbone) -> None:
    assert torch_backbone.network is not None
    assert backbone.engine.name == "onnx"
    with pytest.raises(ModelError, match="engine='torch'"):
        _ = backbone.network


def test_serving_process_does_not_import_torch(tmp_path: Path) -> None:
    # torch holds ~200 MB of resident memory that ONNX Runtime never uses: a server
    # that loads the model (first start: export in a child; then from the cache)
    # and classifies must not import it.
    script = """
import sys
from pathlib import Path
from PIL import Image
from cartag.models.classifier import load_classifier
from cartag.settings import Settings
for _ in range(2):
    classifier = load_classifier(Settings(data_dir=Path(sys.argv[1]), precision="fp32"))
    assert classifier.backbone.engine.name == "onnx"
    classifier.predict([Image.new("RGB", (64, 48), (200, 30, 30))])
print("torch imported" if "torch" in sys.modules else "no torch")
"""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CARTAG_")}
    done = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "no torch"
    assert len(list((tmp_path / "cache" / "onnx").glob("*.onnx"))) == 1


def test_settings_select_the_engine_and_cache(
    tmp_path: Path,
    embedding_classifier: EmbeddingClassifier,
    torch_backbone: Backbone,
    count_exports: list[str],
) -> None:
    settings = Settings(
        data_dir=tmp_path,
        cache_dir=None,  # the default, <data_dir>/cache, not the session's shared cache
        engine="onnx",
        inference_batch_size=4,
        precision="fp32",
    )
    classifier = load_classifier(settings)
    assert isinstance(classifier, EmbeddingClassifier)
    assert classifier.backbone.engine.name == "onnx" and classifier.batch_size == 4
    assert settings.resolved_cache_dir == tmp_path / "cache"
    cached = list((tmp_path / "cache" / "onnx").glob("*.onnx"))
    bundled_id = embedding_classifier.backbone_id
    assert [p.name for p in cached] == [f"{bundled_id}-{PREPROCESS_ID}.onnx"]
    torch_classifier = EmbeddingClassifier(
        Backbone(torch_backbone.variant, torch_backbone.backbone_id, torch_backbone.engine),
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


def test_serving_processes_share_the_cores() -> None:
    cores = physical_cores()
    share = max(1, cores // 2)
    two = Settings(serve_processes=2)
    assert settings_plan(two) == inference_plan("onnx", share, share)
    assert settings_plan(Settings(serve_processes=2 * cores + 1)) == InferencePlan(1, 1)
    # What is set explicitly stays as set.
    assert settings_plan(Settings(serve_processes=2, inference_workers=3)) == inference_plan(
        "onnx", 3, share
    )
    assert settings_plan(Settings()) == inference_plan("onnx")


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
    limited = Backbone(backbone.variant, backbone.backbone_id, engine, concurrency=concurrency)
    batch = np.zeros((1, 3, 224, 224), dtype=np.float32)
    with ThreadPoolExecutor(max_workers=4) as pool:
        list(pool.map(lambda _: limited.embed(batch), range(8)))
    assert engine.most == concurrency
    with pytest.raises(ValueError, match="concurrency"):
        Backbone(backbone.variant, backbone.backbone_id, engine, concurrency=0)
