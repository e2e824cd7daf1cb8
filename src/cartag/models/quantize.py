"""Quantize an exported backbone to int8 with ONNX Runtime, from activation ranges.

Static quantization in ONNX Runtime's QDQ format: int8 weights, one scale per
output channel, uint8 activations whose scales come from a table of ranges
(tensor name -> (min, max)). The table is measured once, when a model is built,
by :func:`calibrate` on real training photos, and shipped in the model folder
(:mod:`cartag.models.quantization`); the service, which has no photos, rebuilds
the same int8 model from it (:func:`quantize`).

Both steps first run ONNX Runtime's ``quant_pre_process`` (shape inference, basic
graph optimisations such as folding batch norms into the convolutions) on the float
model, so that the ranges are named after the tensors of that prepared graph: the
same fp32 export, prepared the same way, has the same names at build and at load.

The service runs this as a child process (``python -m cartag.models.quantize
--model FP32 --quantization JSON --network ID --out PATH``, see
:func:`cartag.models.quantization.quantize_in_child`): onnx and the quantization
tooling (sympy among it) then never load into the serving process.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import logging
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, Final

import numpy as np
import onnx
from onnx import numpy_helper
from onnxruntime.quantization import (
    CalibrationMethod,
    QuantFormat,
    QuantType,
    quant_pre_process,
    quantize_static,
)
from onnxruntime.quantization.calibrate import TensorsData, create_calibrator, save_tensors_data

from cartag.errors import ModelError
from cartag.models.engine import (
    METADATA_NETWORK,
    METADATA_REFERENCE,
    ONNX_INPUT,
    OnnxEngine,
    encode_reference,
    smoke_input,
    write_atomic,
)
from cartag.models.pair_bound import bound_pairs
from cartag.models.quantization import (
    Quantization,
    QuantOptions,
    read_quantization,
)
from cartag.models.scratch import scratch_dir

log = logging.getLogger(__name__)

CALIBRATION_METHODS: Final[dict[str, CalibrationMethod]] = {
    "minmax": CalibrationMethod.MinMax,
    "entropy": CalibrationMethod.Entropy,
    "percentile": CalibrationMethod.Percentile,
}
_TYPES: Final[dict[str, QuantType]] = {"uint8": QuantType.QUInt8, "int8": QuantType.QInt8}


def prepare(fp32: bytes, folder: Path) -> Path:
    """Run ``quant_pre_process`` on a float model.

    Args:
        fp32: The exported float model (:mod:`cartag.models.onnx_export`).
        folder: Where the prepared model is written.

    Returns:
        The prepared model's path.

    Raises:
        ModelError: The model cannot be prepared.
    """
    source, prepared = folder / "fp32.onnx", folder / "prepared.onnx"
    source.write_bytes(fp32)
    try:
        quant_pre_process(str(source), str(prepared), skip_symbolic_shape=False)
    # onnx and onnxruntime raise their own exception types here.
    except Exception as exc:
        raise ModelError(f"cannot prepare the backbone for quantization: {exc}") from exc
    return prepared


class _Batches:
    """ONNX Runtime's calibration data reader over a handful of preprocessed batches."""

    def __init__(self, batches: Sequence[np.ndarray]) -> None:
        self._batches = list(batches)

    def get_next(self) -> dict[str, np.ndarray] | None:
        if not self._batches:
            return None
        return {ONNX_INPUT: np.ascontiguousarray(self._batches.pop(0), dtype=np.float32)}


def calibrate(
    fp32: bytes, batches: Iterable[np.ndarray], method: str = "minmax"
) -> dict[str, tuple[float, float]]:
    """Measure the activation ranges of a float model on real inputs.

    Args:
        fp32: The exported float model.
        batches: float32 (B, 3, S, S) inputs, preprocessed as the service does
            (:meth:`cartag.models.backbone.Backbone.preprocess`).
        method: ``minmax`` (the range of every value seen), ``entropy`` or
            ``percentile`` (ONNX Runtime's histogram calibrators: ranges that clip
            rare outliers).

    Returns:
        Tensor name of the prepared graph -> (min, max), in float32 values.

    Raises:
        ModelError: Unknown method, no input, or ONNX Runtime failed.
    """
    if method not in CALIBRATION_METHODS:
        raise ModelError(
            f"unknown calibration method {method!r}; use {sorted(CALIBRATION_METHODS)}"
        )
    with scratch_dir("cartag-calibrate-") as tmp:
        prepared = prepare(fp32, Path(tmp))
        calibrator = create_calibrator(
            prepared,
            augmented_model_path=str(Path(tmp) / "augmented.onnx"),
            calibrate_method=CALIBRATION_METHODS[method],
            # ORT's percentile default is symmetric, which would give a ReLU6 output
            # (0..6) the range -6..6 and halve its uint8 resolution.
            extra_options={"symmetric": False},
        )
        seen = 0
        # The histogram calibrators print progress lines on stdout.
        with contextlib.redirect_stdout(io.StringIO()):
            # One batch per collect_data call: the calibrators hold every intermediate
            # output of what they are given (~30 MB per 224 px image) until it returns.
            for batch in batches:
                calibrator.collect_data(_Batches([batch]))
                seen += len(batch)
            if not seen:
                raise ModelError("calibration needs at least one image")
            data = calibrator.compute_data()
    return {
        name: (_scalar(td.range_value[0]), _scalar(td.range_value[1]))
        for name, td in sorted(data.items())
    }


def _scalar(value: Any) -> float:
    """A calibrator's range bound (a float32 scalar or 1-element array) as a float."""
    return float(np.asarray(value, dtype=np.float32).reshape(()))


def _tensors_data(ranges: dict[str, tuple[float, float]]) -> TensorsData:
    return TensorsData(
        CalibrationMethod.MinMax,
        {name: (np.float32(lo), np.float32(hi)) for name, (lo, hi) in ranges.items()},
    )


def quantize(fp32: bytes, quantization: Quantization, network: str = "") -> bytes:
    """The QDQ int8 model of ``fp32`` with the shipped activation ranges.

    The same inputs give the same bytes (no randomness, no timestamps).

    Args:
        fp32: The exported float model.
        quantization: Ranges and options (:class:`cartag.models.quantization.Quantization`).
        network: The identity recorded as ``cartag.network`` ("" = none).

    Returns:
        The serialized int8 model, with ``cartag.network`` and ``cartag.reference``
        (its own output on the smoke input, as every load checks).

    Raises:
        ModelError: A tensor the quantizer needs has no range (the ranges were
            measured on another export), or ONNX Runtime failed.
    """
    options = quantization.options
    with scratch_dir("cartag-quantize-") as tmp:
        folder = Path(tmp)
        prepared = prepare(fp32, folder)
        prepared_model = onnx.load_model(str(prepared))
        _check_coverage(prepared, prepared_model, quantization, folder)
        table = folder / "ranges.json"
        save_tensors_data(_tensors_data(quantization.ranges), table)
        out = folder / "int8.onnx"
        try:
            quantize_static(
                str(prepared),
                str(out),
                calibration_data_reader=None,
                quant_format=QuantFormat.QDQ,
                per_channel=options.per_channel,
                reduce_range=options.reduce_range,
                activation_type=_TYPES[options.activations],
                weight_type=_TYPES[options.weights],
                nodes_to_exclude=list(options.exclude_nodes),
                calibrate_method=CalibrationMethod.MinMax,
                calibration_cache_path=table,
            )
            proto = onnx.load_model(str(out))
        except Exception as exc:
            raise ModelError(f"quantizing the backbone failed: {exc}") from exc
        if options.pair_limit:
            floats = {
                init.name: numpy_helper.to_array(init) for init in prepared_model.graph.initializer
            }
            rescaled = bound_pairs(proto, floats, options.pair_limit)
            log.info("pair bound %d: %d channels rescaled", options.pair_limit, rescaled)
    del proto.metadata_props[:]
    entry = proto.metadata_props.add()
    entry.key, entry.value = METADATA_NETWORK, network
    data = bytes(proto.SerializeToString())
    size = int(proto.graph.input[0].type.tensor_type.shape.dim[2].dim_value)
    reference = OnnxEngine(data, threads=1).embed(smoke_input(size))
    entry = proto.metadata_props.add()
    entry.key, entry.value = METADATA_REFERENCE, encode_reference(reference)
    return bytes(proto.SerializeToString())


def _check_coverage(
    prepared: Path, model: onnx.ModelProto, quantization: Quantization, folder: Path
) -> None:
    """Raise unless every tensor the calibrator would measure has a range and every node
    to keep in float exists (the quantizer ignores unknown names silently)."""
    unknown = sorted(set(quantization.options.exclude_nodes) - {n.name for n in model.graph.node})
    if unknown:
        raise ModelError(f"the nodes to keep in float {unknown} are not in this export")
    calibrator = create_calibrator(prepared, augmented_model_path=str(folder / "probe.onnx"))
    wanted, _ = calibrator.select_tensors_to_calibrate(model)
    missing = sorted(set(wanted) - set(quantization.ranges))
    if missing:
        raise ModelError(
            f"the shipped activation ranges do not cover {len(missing)} tensors of this export "
            f"(first {missing[0]!r}): they were measured on another export of the backbone"
        )


def quantize_to_file(model: Path, quantization_path: Path, out: Path, network: str) -> None:
    """Read a float model and a ranges file, write the int8 model.

    Raises:
        ModelError: Reading, quantizing or writing failed.
    """
    try:
        fp32 = model.read_bytes()
    except OSError as exc:
        raise ModelError(f"cannot read the float model {model}: {exc}") from exc
    data = quantize(fp32, read_quantization(quantization_path), network)
    try:
        write_atomic(out, data)
    except OSError as exc:
        raise ModelError(f"cannot write the int8 backbone to {out}: {exc}") from exc


def main(argv: Sequence[str] | None = None) -> int:
    """The child process's entry point; errors go to stderr with exit status 2."""
    parser = argparse.ArgumentParser(prog="python -m cartag.models.quantize")
    parser.add_argument("--model", type=Path, required=True, help="the exported float model")
    parser.add_argument("--quantization", type=Path, required=True, help="quantization.json")
    parser.add_argument("--network", required=True, help="identity to record in the file")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    # ORT's quantizer logs a pre-processing hint at WARNING on every call.
    logging.getLogger().setLevel(logging.ERROR)
    try:
        quantize_to_file(args.model, args.quantization, args.out, args.network)
    except ModelError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"quantized {args.network} to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())


__all__ = ["QuantOptions", "calibrate", "prepare", "quantize"]
