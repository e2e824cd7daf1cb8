"""Inference engines for the backbone: the interface, ONNX Runtime, and its cache.

An engine maps a preprocessed batch to pooled embeddings; it knows nothing about
images or heads. :class:`OnnxEngine` runs the network exported to ONNX under ONNX
Runtime's CPU provider, which folds batch norms into the convolutions, fuses the
ReLU6 clips and picks faster depthwise kernels: several times the throughput of
eager torch on CPU (see ``benchmarks/RESULTS.md``). The eager engine,
:class:`cartag.models.networks.TorchEngine`, lives with the torch code.

This module does not import torch. The ONNX file is exported once (by
:mod:`cartag.models.onnx_export`, in a child process) and cached under
``<data_dir>/cache/onnx/``; it records torch's output on a fixed input, and
every load checks ONNX Runtime's output against it before trusting the file
(:func:`load_cached_onnx`).
"""

from __future__ import annotations

import abc
import base64
import binascii
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Literal

import numpy as np

from cartag.errors import ModelError

EngineName = Literal["onnx", "torch"]

# 17 is well inside what onnxruntime 1.32 runs and has every op the network needs.
ONNX_OPSET: Final[int] = 17
# Largest |onnx - torch| allowed on the smoke input; the embeddings are ReLU6
# activations averaged over the map (values 0..6), so 1e-3 is far above float
# reassociation noise (~1e-5) and far below anything that moves a head's argmax.
PARITY_ATOL: Final[float] = 1e-3
ONNX_INPUT: Final[str] = "images"
ONNX_OUTPUT: Final[str] = "embedding"
# Metadata of an exported model (see cartag.models.onnx_export).
METADATA_NETWORK: Final[str] = "cartag.network"
METADATA_REFERENCE: Final[str] = "cartag.reference"


def physical_cores() -> int:
    """Physical CPU cores this process may run on (SMT siblings counted once).

    Returns:
        At least 1.
    """
    cpus = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
    cores: set[str] = set()
    for cpu in cpus:
        siblings = Path(f"/sys/devices/system/cpu/cpu{cpu}/topology/thread_siblings_list")
        try:
            cores.add(siblings.read_text(encoding="ascii").strip())
        except OSError:
            cores.add(str(cpu))
    return max(1, len(cores) or (os.cpu_count() or 1))


@dataclass(frozen=True)
class InferencePlan:
    """How the service splits the backbone's CPU.

    Attributes:
        workers: Batches that run at once (micro-batcher runner threads).
        threads: Intra-op threads of each run; 0 = the engine's default.
    """

    workers: int
    threads: int


def inference_plan(engine: str, workers: int = 0, threads: int = 0) -> InferencePlan:
    """Choose how many batches run at once and with how many threads each.

    ONNX Runtime gets one single-threaded run per core by default: its
    intra-op threads meet at a barrier after every operator, so on a machine
    whose cores also decode, download and store, one run spread over all cores
    keeps waiting for its slowest thread, while independent runs do not (on
    2 shared cores: +10 % quiet, +20 % with a third busy thread, see
    ``benchmarks/RESULTS.md``). Eager torch keeps one run on every core.

    Args:
        engine: ``onnx`` or ``torch``.
        workers: Batches at once; 0 = one per physical core for ONNX, 1 for torch.
        threads: Threads for the backbone in all (0 = one per physical core),
            shared evenly by the workers.

    Returns:
        The plan; ``threads`` stays 0 (engine default) for a single worker given 0.
    """
    if workers <= 0:
        workers = physical_cores() if engine == "onnx" else 1
    if workers == 1:
        return InferencePlan(1, threads)
    return InferencePlan(workers, max(1, (threads or physical_cores()) // workers))


class Engine(abc.ABC):
    """Runs the backbone on preprocessed batches.

    ``embed`` may be called from several threads at once (the backbone bounds how
    many): an ONNX Runtime session's ``run`` is thread-safe, and the eager network
    is in eval mode under ``inference_mode``, so a forward pass mutates nothing.

    Attributes:
        name: ``torch`` or ``onnx``.
    """

    name: str

    @abc.abstractmethod
    def embed(self, batch: np.ndarray) -> np.ndarray:
        """Embed a batch.

        Args:
            batch: float32 (B, 3, S, S), B >= 1, C-contiguous.

        Returns:
            float32 (B, D).
        """


class OnnxEngine(Engine):
    """ONNX Runtime on the CPU execution provider, all graph optimisations on.

    Args:
        model: A serialized ONNX model or the path of one.
        threads: Intra-op threads; 0 = the number of physical cores.
        spin: Let idle pool threads busy-wait for the next op. Off: the decode
            threads of the service need those cores between batches, and
            spinning workers steal them (measured in ``benchmarks/RESULTS.md``).

    Raises:
        ModelError: onnxruntime is missing or cannot load the model.
    """

    name = "onnx"

    def __init__(self, model: bytes | Path, *, threads: int = 0, spin: bool = False) -> None:
        try:
            import onnxruntime as ort
        except ImportError as exc:
            raise ModelError(f"onnxruntime is not installed ({exc})") from exc
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.intra_op_num_threads = threads if threads > 0 else physical_cores()
        options.inter_op_num_threads = 1
        options.log_severity_level = 3  # errors only: ORT's info lines are not ours to log
        # A memory pattern pre-plans one block for every activation of a run;
        # without it the arena only grows to the live set: lower peak RSS (+74
        # instead of +90 MB at batch 8, +146 instead of +176 MB at 16), same speed.
        options.enable_mem_pattern = False
        options.add_session_config_entry("session.intra_op.allow_spinning", "1" if spin else "0")
        self.threads = options.intra_op_num_threads
        source = str(model) if isinstance(model, Path) else model
        try:
            self._session: Any = ort.InferenceSession(
                source, sess_options=options, providers=["CPUExecutionProvider"]
            )
        # onnxruntime raises its own pybind exception types (Fail, InvalidProtobuf,
        # InvalidGraph, NoSuchFile ...), which share no useful base class.
        except Exception as exc:
            raise ModelError(f"onnxruntime cannot load the backbone model: {exc}") from exc

    @property
    def metadata(self) -> dict[str, str]:
        """The model's custom metadata (ONNX ``metadata_props``)."""
        return dict(self._session.get_modelmeta().custom_metadata_map)

    def embed(self, batch: np.ndarray) -> np.ndarray:
        """See :meth:`Engine.embed`."""
        x = np.ascontiguousarray(batch, dtype=np.float32)
        (out,) = self._session.run([ONNX_OUTPUT], {ONNX_INPUT: x})
        return np.asarray(out, dtype=np.float32)


def smoke_input(input_size: int) -> np.ndarray:
    """The fixed input of the parity check: float32 (2, 3, S, S), seeded normal noise.

    Two images, so that the dynamic batch axis is exercised too.
    """
    rng = np.random.default_rng(20261126)
    return rng.standard_normal((2, 3, input_size, input_size)).astype(np.float32)


def check_parity(engine: Engine, reference: Engine | np.ndarray, input_size: int) -> float:
    """Compare an engine with a reference on :func:`smoke_input`.

    Args:
        engine: The engine to check.
        reference: Another engine (torch), or its float32 (2, D) embeddings of the
            smoke input, as recorded in an exported model.
        input_size: Side S of the network input.

    Returns:
        The largest absolute difference of their embeddings.

    Raises:
        ModelError: Shapes differ or the difference is at least ``PARITY_ATOL``.
    """
    x = smoke_input(input_size)
    want = reference.embed(x) if isinstance(reference, Engine) else reference
    try:
        got = engine.embed(x)
    # A loadable but wrong model fails inside onnxruntime (unknown output name,
    # other input shape) with its own exception types.
    except Exception as exc:
        raise ModelError(f"the {engine.name} engine fails on the smoke input: {exc}") from exc
    if got.shape != want.shape:
        raise ModelError(f"{engine.name} embeddings have shape {got.shape}, torch {want.shape}")
    diff = float(np.max(np.abs(got - want)))
    if not np.isfinite(diff) or diff >= PARITY_ATOL:
        raise ModelError(
            f"{engine.name} embeddings differ from torch by {diff:.2e} (limit {PARITY_ATOL:.0e})"
        )
    return diff


def write_atomic(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so that readers see no file or the whole file.

    Raises:
        OSError: The folder or file cannot be written.
    """
    # Temp file in the same folder + rename: a concurrent reader (another server
    # process) sees either no file or a whole one, never a half-written model.
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            os.fchmod(fh.fileno(), 0o644)  # mkstemp's 0600 would hide it from other users
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def encode_reference(embeddings: np.ndarray) -> str:
    """The ``cartag.reference`` value: float32 (2, D) embeddings as little-endian base64."""
    return base64.b64encode(np.asarray(embeddings, dtype="<f4").tobytes()).decode("ascii")


def decode_reference(value: str) -> np.ndarray:
    """Inverse of :func:`encode_reference`.

    Returns:
        float32 (2, D).

    Raises:
        ValueError: Not base64, or not a whole number of float32 pairs.
    """
    try:
        raw = base64.b64decode(value, validate=True)
    except binascii.Error as exc:
        raise ValueError(f"not base64 ({exc})") from exc
    return np.frombuffer(raw, dtype="<f4").reshape(2, -1).astype(np.float32)


def load_cached_onnx(
    model: bytes | Path, network: str, input_size: int, *, threads: int = 0
) -> OnnxEngine:
    """An exported model, checked against what its export recorded.

    Args:
        model: The file written by :mod:`cartag.models.onnx_export` (or its bytes).
        network: The identity it must record (``cartag.network``).
        input_size: Side S of the network input.
        threads: Intra-op threads (0 = physical cores).

    Raises:
        ModelError: Unloadable, exported from another network or without the
            metadata (a cache written by an older cartag), or its output on the
            smoke input differs from the recorded torch output.
    """
    engine = OnnxEngine(model, threads=threads)
    metadata = engine.metadata
    if metadata.get(METADATA_NETWORK) != network:
        raise ModelError(
            f"the model was exported from {metadata.get(METADATA_NETWORK) or 'an unknown network'}"
            f", not {network}"
        )
    try:
        reference = decode_reference(metadata[METADATA_REFERENCE])
    except (KeyError, ValueError) as exc:
        raise ModelError(f"the model has no usable {METADATA_REFERENCE} ({exc})") from exc
    check_parity(engine, reference, input_size)
    return engine
