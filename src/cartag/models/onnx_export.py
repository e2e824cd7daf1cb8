"""Export a backbone to ONNX, with what a later load needs to trust the file.

The service runs this as a child process (``python -m cartag.models.onnx_export
--variant V [--weights W] --out PATH``, see :func:`cartag.models.onnx_files.export_in_child`)
so that torch is imported there and not in the serving process: torch alone holds
~200 MB of resident memory that ONNX Runtime never uses.

The exported model carries two metadata entries (ONNX ``metadata_props``):

- ``cartag.network``: the network's identity (:func:`cartag.models.onnx_files.network_identity`),
  so that a file exported from other weights is never taken for this one;
- ``cartag.reference``: torch's embeddings of :func:`~cartag.models.engine.smoke_input`,
  float32 (2, D), base64; every load compares ONNX Runtime's output with them
  (:func:`~cartag.models.engine.load_cached_onnx`) instead of importing torch.
"""

from __future__ import annotations

import argparse
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Final

import onnx
import torch

from cartag.errors import ModelError
from cartag.models.engine import (
    METADATA_NETWORK,
    METADATA_REFERENCE,
    ONNX_INPUT,
    ONNX_OPSET,
    ONNX_OUTPUT,
    encode_reference,
    smoke_input,
    write_atomic,
)
from cartag.models.networks import PooledFeatures, TorchEngine, load_network
from cartag.models.scratch import scratch_dir
from cartag.models.variants import get_variant

# Exactly the warnings the (deprecated, but dependency-free) TorchScript exporter
# emits for this network; anything else still reaches the caller.
_EXPORT_WARNINGS: Final[tuple[tuple[str, type[Warning]], ...]] = (
    ("You are using the legacy TorchScript-based ONNX export", DeprecationWarning),
    ("The feature will be removed", DeprecationWarning),
    # ZeroPad2d's asymmetric "same" padding; onnxruntime folds it when loading.
    ("Constant folding - Only steps=1 can be constant folded", UserWarning),
)


def export_onnx(model: torch.nn.Module, input_size: int, network: str = "") -> bytes:
    """Export the pooled-embedding network to ONNX with a dynamic batch axis.

    Args:
        model: The EfficientNet (eval mode).
        input_size: Side S of the network input.
        network: The identity recorded as ``cartag.network`` ("" = none).

    Returns:
        The serialized ONNX model: input ``images`` (B, 3, S, S), output
        ``embedding`` (B, D), with the metadata described in the module docstring.

    Raises:
        ModelError: The export failed.
    """
    module = PooledFeatures(model).eval()
    dummy = torch.zeros(1, 3, input_size, input_size)
    try:
        with scratch_dir("cartag-onnx-") as tmp:
            path = Path(tmp) / "backbone.onnx"
            with warnings.catch_warnings():
                for message, category in _EXPORT_WARNINGS:
                    warnings.filterwarnings("ignore", message=message, category=category)
                # dynamo=False: the torch.export-based exporter needs onnxscript,
                # which cartag does not depend on.
                torch.onnx.export(
                    module,
                    (dummy,),
                    path,
                    input_names=[ONNX_INPUT],
                    output_names=[ONNX_OUTPUT],
                    dynamic_axes={ONNX_INPUT: {0: "batch"}, ONNX_OUTPUT: {0: "batch"}},
                    opset_version=ONNX_OPSET,
                    do_constant_folding=True,
                    dynamo=False,
                )
            proto = onnx.load_model(path)
    except (
        OSError,
        RuntimeError,
        ValueError,
        TypeError,
        torch.onnx.errors.OnnxExporterError,
    ) as exc:
        raise ModelError(f"cannot export the backbone to ONNX: {exc}") from exc
    metadata = {
        METADATA_NETWORK: network,
        METADATA_REFERENCE: encode_reference(TorchEngine(model).embed(smoke_input(input_size))),
    }
    for key, value in metadata.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    return bytes(proto.SerializeToString())


def export_to_file(variant: str, weights: Path | None, out: Path, network: str) -> None:
    """Load the network with torch, export it, write ``out``.

    The file is not checked here: every load checks it
    (:func:`~cartag.models.engine.load_cached_onnx`), the first one included.

    Args:
        variant: ``efficientnet-lite0``, ``-lite1`` or ``-lite2``.
        weights: Fine-tuned weights file, or None for the package's weights.
        out: Where the model goes (written atomically).
        network: The identity to record.

    Raises:
        ModelError: Loading, export or writing failed.
    """
    data = export_onnx(load_network(variant, weights), get_variant(variant).input_size, network)
    try:
        write_atomic(out, data)
    except OSError as exc:
        raise ModelError(f"cannot write the ONNX backbone to {out}: {exc}") from exc


def main(argv: Sequence[str] | None = None) -> int:
    """The child process's entry point; errors go to stderr with exit status 2."""
    parser = argparse.ArgumentParser(prog="python -m cartag.models.onnx_export")
    parser.add_argument("--variant", required=True)
    parser.add_argument("--weights", type=Path, default=None)
    parser.add_argument("--network", required=True, help="identity to record in the file")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    try:
        export_to_file(args.variant, args.weights, args.out, args.network)
    except ModelError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"exported {args.network} to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
