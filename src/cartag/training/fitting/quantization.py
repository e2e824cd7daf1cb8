"""An int8 backbone's activation ranges, measured on real photos, and the int8 gate.

Both builds that ship int8 heads use this: the bundled model
(:mod:`cartag.training.bundled.quantization`, calibrated on the training split of the
shared photos) and the candidates of ``cartag train``
(:mod:`cartag.training.sweep.int8`, calibrated on the dataset's train split, or reusing
production's ranges when they run on its network). The ranges go into the model folder
as ``quantization.json`` (:mod:`cartag.models.quantization`) with the int8 model's
output on the smoke input, so that a service that rebuilds the int8 model from the
ranges can check it made the model the heads were fitted on.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any, Final

import numpy as np
import onnxruntime

from cartag.models.backbone import Backbone, network_identity
from cartag.models.engine import OnnxEngine, smoke_input
from cartag.models.pair_bound import PAIR_LIMIT
from cartag.models.quantization import (
    Quantization,
    QuantOptions,
    int8_backbone_id,
    write_quantization,
)
from cartag.models.quantize import calibrate, quantize

# The heads fitted on the int8 embeddings, beside the float ones.
INT8_HEADS: Final[dict[str, str]] = {"image_type": "type_head_int8", "color": "color_head_int8"}
CALIBRATION_PHOTOS: Final[int] = 256
CALIBRATION_BATCH: Final[int] = 8
# The stem convolution stays in float: it reads the normalised image, whose three
# channels (-2.1..2.6 together) one uint8 scale would cover with ~58 levels per unit;
# keeping it float brought the embeddings closer to fp32 on held-out photos (cosine
# mean 0.9961 -> 0.9968, min 0.983 -> 0.987) at no measurable speed cost
# (benchmarks/RESULTS.md, "Int8 backbone (issue 18)").
FLOAT_NODES: Final[tuple[str, ...]] = ("/_conv_stem/Conv",)
# Largest loss of type macro recall or of color top-1 that int8 heads may show against
# the float ones on any test set (issue 18's gate).
GATE_TOLERANCE: Final[float] = 0.005


def default_options() -> QuantOptions:
    """The quantizer's options of both builds: the stem in float, bounded weight pairs."""
    return QuantOptions(exclude_nodes=FLOAT_NODES, pair_limit=PAIR_LIMIT)


def write_ranges(
    backbone: Backbone,
    fp32: bytes,
    batches: Iterable[np.ndarray],
    calibration: dict[str, Any],
    out_path: Path,
    *,
    method: str = "minmax",
    options: QuantOptions | None = None,
) -> Quantization:
    """Measure the ranges, quantize once to record the reference, write ``out_path``.

    Args:
        backbone: The float backbone the ranges are for (its id, variant, weights and
            input size; its engine is not used).
        fp32: The float ONNX export of that backbone.
        batches: float32 (B, 3, S, S) inputs, preprocessed as the service does
            (:meth:`~cartag.models.backbone.Backbone.preprocess`).
        calibration: What the photos were (``photos``, ``chosen``, ...), recorded in the
            file after ``method``.
        out_path: The ``quantization.json`` to write.
        method: Calibration method (:func:`cartag.models.quantize.calibrate`).
        options: Quantizer options (default: :func:`default_options`).

    Returns:
        What was written.

    Raises:
        ModelError: No input, an unknown method, or ONNX Runtime failed.
    """
    options = options or default_options()
    ranges = calibrate(fp32, batches, method)
    record: dict[str, Any] = {
        "method": method,
        **calibration,
        "onnxruntime": onnxruntime.__version__,
        "preprocess": "onnxruntime.quantization.quant_pre_process",
        "format": "QDQ",
    }
    unreferenced = Quantization(ranges, options, record)
    int8_network = network_identity(
        backbone.variant,
        backbone.weights_path,
        int8_backbone_id(backbone.backbone_id, unreferenced),
    )
    int8 = quantize(fp32, unreferenced, int8_network)
    reference = OnnxEngine(int8, threads=1).embed(smoke_input(backbone.input_size))
    quantization = Quantization(ranges, options, record, reference)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    write_quantization(out_path, quantization)
    return quantization
