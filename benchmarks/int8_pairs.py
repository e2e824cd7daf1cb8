"""Int8 weight variants on this CPU: saturation, closeness to fp32, speed.

The bundled network quantized with the shipped activation ranges and four weight options:
full-range int8 weights (what was shipped before pair bounds), ``reduce_range`` (7-bit),
uint8 weights (u8u8), and int8 weights with neighbouring pairs bounded
(:mod:`cartag.models.pair_bound`, the shipped option). For each: the cosine of its
embeddings of real photos to the fp32 backbone's, the cosine of ONNX Runtime's integer
kernels to the same quantized model run as float (graph optimisations off: the QDQ pairs
then compute the quantized arithmetic without int16 intermediates; a low value means the
kernels saturate on this CPU), and the backbone's images/s on one thread.

Usage::

    .venv/bin/python -m benchmarks.int8_pairs [--images 64] [--limits 127,100]
"""

from __future__ import annotations

import argparse
import dataclasses
import tempfile
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort
from PIL import Image

from cartag.models.backbone import PREPROCESS_ID, Backbone
from cartag.models.classifier import BUNDLED_DIR
from cartag.models.engine import ONNX_INPUT
from cartag.models.folder import backbone_spec
from cartag.models.quantization import QUANTIZATION_NAME, QuantOptions, read_quantization
from cartag.models.quantize import quantize
from tests.support.images import real_photos

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"


def _session(data: bytes, optimized: bool) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    if not optimized:
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    return ort.InferenceSession(data, options, providers=["CPUExecutionProvider"])


def _embed(session: ort.InferenceSession, batch: np.ndarray) -> np.ndarray:
    rows = [session.run(None, {ONNX_INPUT: batch[i : i + 4]})[0] for i in range(0, len(batch), 4)]
    return np.concatenate(rows).reshape(len(batch), -1)


def _cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))  # type: ignore[no-any-return]


def main() -> None:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--images", type=int, default=64, help="photos per source (2 sources)")
    parser.add_argument("--limits", default="127,100", help="pair limits to try")
    parser.add_argument("--data", type=Path, default=SHARED)
    args = parser.parse_args()
    shipped = read_quantization(BUNDLED_DIR / QUANTIZATION_NAME)
    spec = backbone_spec(BUNDLED_DIR)
    with tempfile.TemporaryDirectory() as tmp:
        fp = Backbone.load(spec.variant, engine="onnx", cache_dir=Path(tmp), weights=spec.weights)
        onnx_path = Path(tmp) / "onnx" / f"{fp.backbone_id}-{PREPROCESS_ID}.onnx"
        fp32 = onnx_path.read_bytes()
    paths = real_photos(args.data / "vcr-train", args.images)
    paths += real_photos(args.data / "type-train", args.images)
    batch = fp.preprocess([Image.open(p).convert("RGB") for p in paths])
    reference = fp.embed(batch)
    base = dataclasses.replace(shipped.options, pair_limit=0)
    variants: dict[str, QuantOptions] = {
        "full-range int8 weights": base,
        "reduce_range (7-bit weights)": dataclasses.replace(base, reduce_range=True),
        "uint8 weights (u8u8)": dataclasses.replace(base, weights="uint8"),
    }
    for limit in (int(v) for v in args.limits.split(",") if v):
        variants[f"pairs bounded at {limit}"] = dataclasses.replace(base, pair_limit=limit)
    print(f"{len(paths)} photos; pair limit shipped: {shipped.options.pair_limit}\n")
    print(
        "| int8 variant | to fp32: mean | min | kernels vs float simulation: min "
        "| img/s, 1 thread |"
    )
    print("|---|---:|---:|---:|---:|")
    for name, options in variants.items():
        data = quantize(fp32, dataclasses.replace(shipped, options=options, reference=None))
        fast = _session(data, True)
        kernels = _embed(fast, batch)
        simulated = _embed(_session(data, False), batch)
        to_fp32 = _cosine(kernels, reference)
        started = time.perf_counter()
        _embed(fast, batch)
        rate = len(batch) / (time.perf_counter() - started)
        print(
            f"| {name} | {to_fp32.mean():.4f} | {to_fp32.min():.4f} | "
            f"{_cosine(kernels, simulated).min():.4f} | {rate:.1f} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
