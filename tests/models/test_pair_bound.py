"""Bounded int8 weight pairs: the int8 backbone computes the same integers on every x86 CPU."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import numpy_helper
from PIL import Image

from cartag.models.backbone import PREPROCESS_ID, Backbone
from cartag.models.classifier import BUNDLED_DIR
from cartag.models.engine import ONNX_INPUT
from cartag.models.folder import backbone_spec
from cartag.models.pair_bound import PAIR_LIMIT, pair_sums
from cartag.models.quantization import (
    QUANTIZATION_NAME,
    Quantization,
    QuantOptions,
    ranges_digest,
    read_quantization,
)
from tests.support.images import real_photos

# vpmaddubsw adds two uint8 x int8 products into a saturating int16.
INT16_MAX = 32767


def test_pairs_are_neighbours_in_a_one_by_one_kernel() -> None:
    weights = np.array([[3.0, 4.0, -1.0, 2.0], [1.0, -5.0, 0.5, 0.5]])
    assert pair_sums(weights, one_by_one=True).tolist() == [7.0, 5.0]


def test_pairs_of_a_larger_kernel_are_any_two_weights() -> None:
    weights = np.array([[3.0, -1.0, 4.0, 0.5], [-2.0, 1.0, -2.5, 6.0]])
    # Any two of the same sign: 3 + 4, and max(2 + 2.5, 6 + 1, 6) for the second.
    assert pair_sums(weights, one_by_one=False).tolist() == [7.0, 7.0]


def test_a_pair_limit_changes_the_digest_and_no_limit_keeps_the_old_one() -> None:
    ranges = {"a": (0.0, 6.0)}
    assert ranges_digest(ranges, QuantOptions(pair_limit=127)) != ranges_digest(
        ranges, QuantOptions()
    )
    # Files written before the option verify as they did (the bundled one among them).
    shipped = read_quantization(BUNDLED_DIR / QUANTIZATION_NAME)
    assert shipped.digest == ranges_digest(shipped.ranges, shipped.options)


@pytest.fixture(scope="module")
def fp32_export(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    spec = backbone_spec(BUNDLED_DIR)
    cache = tmp_path_factory.mktemp("onnx-cache")
    loaded = Backbone.load(spec.variant, engine="onnx", cache_dir=cache, weights=spec.weights)
    return (cache / "onnx" / f"{loaded.backbone_id}-{PREPROCESS_ID}.onnx").read_bytes()


@pytest.fixture(scope="module")
def bounded(fp32_export: bytes) -> tuple[bytes, Quantization]:
    from cartag.models.quantize import quantize

    shipped = read_quantization(BUNDLED_DIR / QUANTIZATION_NAME)
    options = dataclasses.replace(shipped.options, pair_limit=PAIR_LIMIT)
    quantization = dataclasses.replace(shipped, options=options, reference=None)
    return quantize(fp32_export, quantization, "net"), quantization


def _initializers(model: onnx.ModelProto) -> dict[str, np.ndarray]:
    return {init.name: numpy_helper.to_array(init) for init in model.graph.initializer}


@pytest.mark.slow
def test_no_pair_of_a_bounded_model_can_saturate(bounded: tuple[bytes, Quantization]) -> None:
    model = onnx.load_from_string(bounded[0])
    inits = _initializers(model)
    producer = {out: node for node in model.graph.node for out in node.output}
    checked = 0
    for node in model.graph.node:
        group = next((a.i for a in node.attribute if a.name == "group"), 1)
        weight = producer.get(node.input[1]) if node.op_type == "Conv" else None
        if weight is None or weight.op_type != "DequantizeLinear" or group > 1:
            continue
        q = inits[weight.input[0]].astype(np.int64)
        assert q.shape[2:] == (1, 1)
        worst = pair_sums(q.reshape(len(q), -1).astype(np.float64), one_by_one=True).max()
        assert 255 * worst <= INT16_MAX, node.name
        # The bias keeps scale = input scale x weight scale, so it dequantizes to itself.
        bias = producer[node.input[2]]
        ratio = inits[bias.input[1]] / inits[weight.input[1]]
        np.testing.assert_allclose(ratio, ratio[0], rtol=1e-5)
        checked += 1
    assert checked == 32  # every pointwise convolution of EfficientNet-Lite0 after the stem


def _session(data: bytes, optimized: bool) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    if not optimized:  # QDQ pairs then run as float: the quantized arithmetic, exactly
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    return ort.InferenceSession(data, options, providers=["CPUExecutionProvider"])


@pytest.mark.slow
def test_the_integer_kernels_compute_what_the_quantized_model_says(
    bounded: tuple[bytes, Quantization], shared_data: Path
) -> None:
    """On a CPU without VNNI the unbounded model's kernels clip pairs (cosine 0.74 on an AVX2 EPYC);
    the bounded model's agree with its float simulation on any CPU."""
    spec = backbone_spec(BUNDLED_DIR)
    backbone = Backbone.load(spec.variant, engine="torch", weights=spec.weights)
    images = [Image.open(p).convert("RGB") for p in real_photos(shared_data, 16)]
    batch = backbone.preprocess(images)
    kernels = _session(bounded[0], True).run(None, {ONNX_INPUT: batch})[0]
    simulated = _session(bounded[0], False).run(None, {ONNX_INPUT: batch})[0]
    cosine = (kernels * simulated).sum(1) / (
        np.linalg.norm(kernels, axis=1) * np.linalg.norm(simulated, axis=1)
    )
    assert cosine.min() > 0.998
    fp32 = backbone.embed(batch)
    to_fp32 = (kernels * fp32).sum(1) / (
        np.linalg.norm(kernels, axis=1) * np.linalg.norm(fp32, axis=1)
    )
    assert to_fp32.mean() > 0.993


@pytest.mark.parametrize(
    ("flags", "lacks"),
    [
        ("fpu sse2 avx avx2 fma", True),
        ("fpu avx2 avx512f avx512_vnni", False),
        ("fpu avx2 avx_vnni", False),
        ("fp asimd", False),  # not x86: unknown, no claim
    ],
)
def test_a_cpu_without_vnni_is_named_in_the_drift_message(
    tmp_path: Path, flags: str, lacks: bool
) -> None:
    from cartag.models.quantization import _lacks_vnni

    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text(f"processor\t: 0\nflags\t\t: {flags}\n", encoding="utf-8")
    assert _lacks_vnni(cpuinfo) is lacks
    assert _lacks_vnni(tmp_path / "missing") is False


def test_a_graph_the_bound_cannot_read_is_a_model_error() -> None:
    from onnx import TensorProto, helper

    from cartag.errors import ModelError
    from cartag.models.pair_bound import bound_pairs

    # A weight read through DequantizeLinear whose float original is missing.
    weight = helper.make_tensor("w_quantized", TensorProto.INT8, [2, 2, 1, 1], [1, 2, 3, 4])
    scale = helper.make_tensor("w_scale", TensorProto.FLOAT, [2], [0.1, 0.1])
    nodes = [
        helper.make_node("DequantizeLinear", ["w_quantized", "w_scale"], ["w"], axis=0),
        helper.make_node("Conv", ["x", "w"], ["y"]),
    ]
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2, 1, 1])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2, 1, 1])],
        [weight, scale],
    )
    with pytest.raises(ModelError, match="'w' of .* cannot be bounded.*PRECISION=fp32"):
        bound_pairs(helper.make_model(graph), {})
