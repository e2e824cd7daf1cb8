"""The int8 backbone: quantization from shipped ranges, its identity, cache and serving switch."""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cartag.errors import ModelError
from cartag.models.backbone import PREPROCESS_ID, Backbone
from cartag.models.classifier import BUNDLED_DIR, EmbeddingClassifier, load_classifier
from cartag.models.engine import Engine
from cartag.models.folder import CONFIG_NAME, read_config
from cartag.models.pair_bound import PAIR_LIMIT
from cartag.models.quantization import (
    DRIFT_RTOL,
    QUANTIZATION_NAME,
    Quantization,
    QuantOptions,
    check_drift,
    int8_backbone_id,
    ranges_digest,
    read_quantization,
    write_quantization,
)
from cartag.settings import Settings
from tests.support.images import real_photos

pytestmark = pytest.mark.slow

SHIPPED = BUNDLED_DIR / QUANTIZATION_NAME


@pytest.fixture(scope="module")
def shipped() -> Quantization:
    return read_quantization(SHIPPED)


@pytest.fixture(scope="module")
def int8_classifier() -> EmbeddingClassifier:
    """The bundled model served in int8 (the ONNX files cached in the default data dir)."""
    return EmbeddingClassifier.from_dir(
        BUNDLED_DIR, engine="onnx", cache_dir=Settings().data_dir / "cache", precision="int8"
    )


@pytest.fixture(scope="module")
def fp32_onnx(int8_classifier: EmbeddingClassifier) -> bytes:
    """The float export the int8 model was quantized from (cached beside it, in the cache
    folder the fixture above loads it with)."""
    ident = int8_classifier.backbone_id.split("+int8@")[0]
    return (Settings().data_dir / "cache" / "onnx" / f"{ident}-{PREPROCESS_ID}.onnx").read_bytes()


def _folder_copy(tmp_path: Path) -> Path:
    folder = tmp_path / "model"
    shutil.copytree(BUNDLED_DIR, folder)
    return folder


def _edit_config(folder: Path, **changes: object) -> None:
    config = read_config(folder)
    for key, value in changes.items():
        if value is None:
            config.pop(key, None)
        else:
            config[key] = value
    (folder / CONFIG_NAME).write_text(json.dumps(config), encoding="utf-8")


def test_the_bundled_model_ships_int8_ranges_and_heads(
    shipped: Quantization, int8_classifier: EmbeddingClassifier
) -> None:
    config = read_config(BUNDLED_DIR)
    fp32_id = config["backbone"]["backbone_id"]
    assert config["int8"]["backbone_id"] == int8_backbone_id(fp32_id, shipped)
    assert int8_classifier.backbone_id == f"{fp32_id}+int8@{shipped.digest[:8]}"
    assert int8_classifier.type_head.backbone_id == int8_classifier.backbone_id
    assert int8_classifier.color_head.backbone_id == int8_classifier.backbone_id
    assert int8_classifier.int8_problem is None
    assert shipped.calibration["photos"] == 256
    # Bounded weight pairs: the same integers with and without VNNI (test_pair_bound.py).
    assert shipped.options.pair_limit == PAIR_LIMIT
    assert shipped.reference is not None


def test_quantizing_the_same_ranges_gives_the_same_bytes(
    fp32_onnx: bytes, shipped: Quantization
) -> None:
    from cartag.models.quantize import quantize

    first = quantize(fp32_onnx, shipped, "net")
    assert quantize(fp32_onnx, shipped, "net") == first
    assert len(first) < len(fp32_onnx) / 2  # int8 weights


def test_int8_embeddings_are_close_to_fp32_on_real_photos(
    shared_data: Path, int8_classifier: EmbeddingClassifier, backbone: Backbone
) -> None:
    images = [Image.open(p).convert("RGB") for p in real_photos(shared_data, 8)]
    fp32 = backbone.embed_images(images)
    int8 = int8_classifier.backbone.embed_images(images)
    cosine = (fp32 * int8).sum(axis=1) / np.linalg.norm(fp32, axis=1) / np.linalg.norm(int8, axis=1)
    assert cosine.min() > 0.98
    assert not np.array_equal(fp32, int8)


def test_the_int8_cache_is_keyed_by_the_ranges(
    tmp_path: Path, shipped: Quantization, backbone: Backbone, caplog: pytest.LogCaptureFixture
) -> None:
    cache = tmp_path / "cache"
    (cache / "onnx").mkdir(parents=True)
    # The float export is already cached in the default data dir: start from it.
    for path in (Settings().resolved_cache_dir / "onnx").glob(f"*{PREPROCESS_ID}.onnx"):
        shutil.copy(path, cache / "onnx" / path.name)
    ranges = dict(shipped.ranges)
    name = sorted(ranges)[len(ranges) // 2]
    ranges[name] = (ranges[name][0], ranges[name][1] * 2)
    changed = Quantization(ranges, shipped.options, shipped.calibration, None)
    write_quantization(tmp_path / "changed.json", changed)

    with caplog.at_level(logging.INFO, logger="cartag.models"):
        loaded = [
            Backbone.load(
                backbone.variant,
                engine="onnx",
                cache_dir=cache,
                weights=backbone.weights_path,
                quantization=path,
            )
            for path in (SHIPPED, tmp_path / "changed.json")
        ]

    assert loaded[0].backbone_id != loaded[1].backbone_id
    int8_files = sorted(p.name for p in (cache / "onnx").glob("*-int8-*.onnx"))
    assert int8_files == sorted(
        f"{backbone.backbone_id}-{PREPROCESS_ID}-int8-{q.tag}.onnx" for q in (shipped, changed)
    )
    # The shipped ranges are checked against the build's output (the changed ones record none).
    checked = [r.getMessage() for r in caplog.records if "from the build's output" in r.message]
    assert len(checked) == 1 and f"+int8@{shipped.tag} " in checked[0]


def test_tampered_ranges_are_refused(tmp_path: Path) -> None:
    body = json.loads(SHIPPED.read_text(encoding="utf-8"))
    first = sorted(body["ranges"])[0]
    body["ranges"][first][1] += 1.0
    path = tmp_path / QUANTIZATION_NAME
    path.write_text(json.dumps(body), encoding="utf-8")
    with pytest.raises(ModelError, match="do not match their recorded sha256.*PRECISION=fp32"):
        read_quantization(path)


def test_the_digest_covers_ranges_and_options() -> None:
    ranges = {"a": (0.0, 6.0), "b": (-1.5, 2.25)}
    digest = ranges_digest(ranges, QuantOptions())
    assert ranges_digest(dict(reversed(ranges.items())), QuantOptions()) == digest
    assert ranges_digest({**ranges, "b": (-1.5, 2.5)}, QuantOptions()) != digest
    assert ranges_digest(ranges, QuantOptions(reduce_range=True)) != digest


def test_drift_from_the_build_is_refused(
    shipped: Quantization, int8_classifier: EmbeddingClassifier
) -> None:
    engine = int8_classifier.backbone.engine
    # 0.0 on the build's CPU family; another CPU's float stem moves it by 1-1.5 %.
    assert check_drift(engine, shipped, 224) < DRIFT_RTOL
    assert shipped.reference is not None
    moved = Quantization(shipped.ranges, shipped.options, {}, shipped.reference * 1.1)
    with pytest.raises(ModelError, match="differs from the one its heads were fitted on"):
        check_drift(engine, moved, 224)


def test_the_drift_is_relative_to_each_smoke_embedding() -> None:
    class Fixed(Engine):
        name = "fixed"

        def __init__(self, out: np.ndarray) -> None:
            self.out = out

        def embed(self, x: np.ndarray) -> np.ndarray:
            return self.out

    want = np.array([[3.0, 4.0, 0.0], [0.0, 0.3, 0.4]], dtype=np.float32)  # lengths 5 and 0.5
    quantization = Quantization({}, QuantOptions(), {}, want)
    near = want + np.array([[0.1, 0.0, 0.0], [0.0, 0.0, 0.01]], dtype=np.float32)
    assert check_drift(Fixed(near), quantization, 224) == pytest.approx(0.02, rel=1e-5)
    # The same absolute step is 20 % of the short embedding: refused.
    far = want + np.array([[0.0, 0.0, 0.0], [0.1, 0.0, 0.0]], dtype=np.float32)
    with pytest.raises(ModelError, match="0.2 of its embeddings' length"):
        check_drift(Fixed(far), quantization, 224)
    with pytest.raises(ModelError, match="inf"):
        check_drift(Fixed(want[:1]), quantization, 224)


def test_a_folder_without_ranges_serves_fp32(tmp_path: Path, backbone: Backbone) -> None:
    folder = _folder_copy(tmp_path)
    (folder / QUANTIZATION_NAME).unlink()
    _edit_config(folder, int8=None)
    model = EmbeddingClassifier.from_dir(
        folder, engine="onnx", cache_dir=Settings().data_dir / "cache", precision="int8"
    )
    assert model.backbone_id == backbone.backbone_id
    assert "+int8" not in model.type_head.metadata["backbone_id"]


def test_precision_fp32_serves_the_fp32_heads(int8_classifier: EmbeddingClassifier) -> None:
    model = load_classifier(Settings(precision="fp32"))
    assert isinstance(model, EmbeddingClassifier)
    assert "+int8" not in model.backbone_id
    assert model.type_head.backbone_id == model.backbone_id
    assert model.type_head.digest() != int8_classifier.type_head.digest()


def test_int8_on_the_torch_engine_serves_fp32(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, backbone: Backbone
) -> None:
    with caplog.at_level(logging.INFO, logger="cartag.models"):
        model = EmbeddingClassifier.from_dir(BUNDLED_DIR, backbone=backbone, precision="int8")
    assert model.backbone_id == backbone.backbone_id
    assert "serving the fp32 backbone" in caplog.text and "engine is torch" in caplog.text


def test_a_fp32_head_on_the_int8_backbone_is_refused(
    int8_classifier: EmbeddingClassifier, embedding_classifier: EmbeddingClassifier
) -> None:
    with pytest.raises(ModelError, match=r"was trained on .* installed backbone is .*\+int8@"):
        EmbeddingClassifier(
            int8_classifier.backbone,
            embedding_classifier.type_head,
            int8_classifier.color_head,
            "v",
            color_features=int8_classifier.color_features,
        )


def test_unusable_int8_falls_back_to_fp32_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, backbone: Backbone
) -> None:
    folder = _folder_copy(tmp_path)
    body = json.loads((folder / QUANTIZATION_NAME).read_text(encoding="utf-8"))
    body["format"] = "something-else"
    (folder / QUANTIZATION_NAME).write_text(json.dumps(body), encoding="utf-8")
    with caplog.at_level(logging.WARNING, logger="cartag.models"):
        model = EmbeddingClassifier.from_dir(
            folder, engine="onnx", cache_dir=Settings().data_dir / "cache", precision="int8"
        )
    assert model.backbone_id == backbone.backbone_id
    assert "int8 backbone" in caplog.text and "serving fp32" in caplog.text
    # Said to operators too (cartag_int8_unavailable, alert CartagQuantizedBackboneUnusable).
    assert model.int8_problem is not None and "not a usable" in model.int8_problem


def test_a_malformed_int8_block_is_refused(tmp_path: Path) -> None:
    folder = _folder_copy(tmp_path)
    _edit_config(folder, int8={"quantization": "../x.json", "heads": {}})
    with pytest.raises(ModelError, match="int8 must name quantization"):
        EmbeddingClassifier.from_dir(folder, engine="onnx", precision="int8")


def test_the_server_loads_int8_by_default_in_a_fresh_data_dir_without_torch(
    tmp_path: Path,
) -> None:
    # The service exports and quantizes in child processes: neither torch nor the
    # quantization tooling (onnx, sympy) is imported by the serving process.
    script = """
import sys
from pathlib import Path
from PIL import Image
from cartag.models.classifier import load_classifier
from cartag.settings import Settings
for _ in range(2):
    classifier = load_classifier(Settings(data_dir=Path(sys.argv[1])))  # int8 by default
    assert "+int8@" in classifier.backbone.backbone_id, classifier.backbone.backbone_id
    classifier.predict([Image.new("RGB", (64, 48), (200, 30, 30))])
heavy = [m for m in ("torch", "onnx", "onnxruntime.quantization", "sympy") if m in sys.modules]
print(",".join(heavy) or "none")
"""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CARTAG_")}
    done = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "none"
    names = sorted(p.name for p in (tmp_path / "cache" / "onnx").glob("*.onnx"))
    assert len(names) == 2 and sum("-int8-" in n for n in names) == 1
