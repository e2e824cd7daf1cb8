"""The backbone's ONNX files: exported and quantized in child processes, cached, checked.

:func:`onnx_model` gives the float model of a network (:mod:`cartag.models.onnx_export`
run as a child, so that torch never loads here) and :func:`int8_onnx_engine` its int8
model (:mod:`cartag.models.quantize` as a child, from a model folder's activation
ranges, :mod:`cartag.models.quantization`). Both are cached as
``<data_dir>/cache/onnx/<backbone id>-<preprocessing>[-int8-<ranges digest[:8]>].onnx``
and checked on every load against the output their maker recorded.
"""

from __future__ import annotations

import logging
import subprocess
import sys
from pathlib import Path
from typing import Final

from cartag.errors import ModelError
from cartag.models.engine import Engine, load_cached_onnx, write_atomic
from cartag.models.quantization import int8_backbone_id, int8_engine, read_quantization
from cartag.models.scratch import scratch_dir
from cartag.models.variants import get_variant, packaged_id

log = logging.getLogger(__name__)

# An export takes seconds (lite0: ~3 s with torch's import); a child still
# running after minutes is stuck, and the backbone falls back to torch in-process.
EXPORT_TIMEOUT_S: Final[float] = 600.0


def network_identity(variant: str, weights: Path | None, backbone: str) -> str:
    """What an exported ONNX model must have been made from: the backbone id, and for
    fine-tuned weights also the package weights they patch (a new package release
    would change the network while the weights file, and so the id, stays the same).
    """
    return backbone if weights is None else f"{backbone} on {packaged_id(variant)}"


def export_in_child(variant: str, weights: Path | None, network: str) -> bytes:
    """Export the network to ONNX in a child process (:mod:`cartag.models.onnx_export`).

    torch is imported in the child only, so this process never holds its ~200 MB.

    Returns:
        The exported model's bytes.

    Raises:
        ModelError: The child failed (its last error line is in the message) or timed out.
    """
    with scratch_dir("cartag-onnx-") as tmp:
        out = Path(tmp) / "backbone.onnx"
        command = [sys.executable, "-m", "cartag.models.onnx_export", "--variant", variant]
        command += ["--network", network, "--out", str(out)]
        if weights is not None:
            command += ["--weights", str(weights)]
        try:
            done = subprocess.run(
                command, capture_output=True, text=True, timeout=EXPORT_TIMEOUT_S, check=False
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise ModelError(f"the ONNX export process did not finish: {exc}") from exc
        if done.returncode != 0:
            lines = (done.stderr or done.stdout).strip().splitlines()
            detail = lines[-1].removeprefix("error: ") if lines else f"exit {done.returncode}"
            raise ModelError(f"exporting the backbone to ONNX failed: {detail}")
        try:
            return out.read_bytes()
        except OSError as exc:
            raise ModelError(f"the ONNX export process wrote no model: {exc}") from exc


def onnx_model(
    variant: str, weights: Path | None, ident: str, threads: int, stem: Path | None
) -> tuple[Engine, bytes | Path]:
    """The float ONNX engine and its model: from the cache if it checks out, else
    exported (and cached).

    Args:
        variant: The network's variant.
        weights: Its fine-tuned weights file, or None.
        ident: Its backbone id.
        threads: Intra-op threads of the engine (0 = physical cores).
        stem: The cache files' path without suffix (``<cache>/onnx/<id>-<preprocessing>``),
            or None for no cache.

    Returns:
        The engine, and the checked model (the cached file, or the bytes when not cached).

    Raises:
        ModelError: The export failed or its model does not match torch.
    """
    network = network_identity(variant, weights, ident)
    size = get_variant(variant).input_size
    path = None if stem is None else stem.with_name(f"{stem.name}.onnx")
    if path is not None and path.is_file():
        try:
            return load_cached_onnx(path, network, size, threads=threads), path
        except ModelError as exc:
            log.warning("cached ONNX backbone %s is unusable (%s); exporting it again", path, exc)
    data = export_in_child(variant, weights, network)
    engine = load_cached_onnx(data, network, size, threads=threads)
    if path is not None:
        try:
            write_atomic(path, data)
        except OSError as exc:
            log.warning(
                "cannot cache the ONNX backbone at %s (%s); using it from memory", path, exc
            )
        else:
            log.info("exported the ONNX backbone to %s", path)
    return engine, data


def int8_onnx_engine(
    variant: str,
    weights: Path | None,
    ident: str,
    quantization: Path,
    threads: int,
    stem: Path | None,
) -> tuple[str, Engine]:
    """The int8 engine of a model folder's ``quantization.json`` and its backbone id.

    The float model is exported (or taken from the cache) only when the int8 one
    is not cached yet (``<stem>-int8-<ranges digest[:8]>.onnx``); see
    :mod:`cartag.models.quantization`. Arguments as :func:`onnx_model`, and
    ``quantization``, the ranges file.

    Raises:
        ModelError: The ranges file is unusable, or quantization or its checks failed.
    """
    int8_ident = int8_backbone_id(ident, read_quantization(quantization))
    tag = int8_ident.rsplit("@", 1)[1]
    path = None if stem is None else stem.with_name(f"{stem.name}-int8-{tag}.onnx")
    engine = int8_engine(
        # One thread: this float session only proves the export before it is quantized.
        lambda: onnx_model(variant, weights, ident, 1, stem)[1],
        quantization,
        network_identity(variant, weights, int8_ident),
        get_variant(variant).input_size,
        threads=threads,
        cache_path=path,
    )
    return int8_ident, engine
