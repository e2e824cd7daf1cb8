"""Inference engines for the frozen backbone: torch eager and ONNX Runtime.

An engine maps a preprocessed batch to pooled embeddings; it knows nothing about
images or heads. :class:`TorchEngine` runs the PyTorch module as it is;
:class:`OnnxEngine` runs the same weights exported to ONNX under ONNX Runtime's
CPU provider, which folds batch norms into the convolutions, fuses the ReLU6
clips and picks faster depthwise kernels: several times the throughput of
eager torch on CPU (see ``benchmarks/RESULTS.md``).

The ONNX file is exported from the torch weights on first use and cached under
``<data_dir>/cache/onnx/``; every load checks it against torch on a fixed input
before trusting it.
"""

from __future__ import annotations

import abc
import logging
import os
import tempfile
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Literal, cast

import numpy as np
import torch

from cartag.errors import ModelError

log = logging.getLogger(__name__)

EngineName = Literal["onnx", "torch"]

# 17 is well inside what onnxruntime 1.32 runs and has every op the network needs.
ONNX_OPSET: Final[int] = 17
# Largest |onnx - torch| allowed on the smoke input; the embeddings are ReLU6
# activations averaged over the map (values 0..6), so 1e-3 is far above float
# reassociation noise (~1e-5) and far below anything that moves a head's argmax.
PARITY_ATOL: Final[float] = 1e-3
_INPUT: Final[str] = "images"
_OUTPUT: Final[str] = "embedding"

# Exactly the warnings the (deprecated, but dependency-free) TorchScript exporter
# emits for this network; anything else still reaches the caller.
_EXPORT_WARNINGS: Final[tuple[tuple[str, type[Warning]], ...]] = (
    ("You are using the legacy TorchScript-based ONNX export", DeprecationWarning),
    ("The feature will be removed", DeprecationWarning),
    # ZeroPad2d's asymmetric "same" padding; onnxruntime folds it when loading.
    ("Constant folding - Only steps=1 can be constant folded", UserWarning),
)


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


class PooledFeatures(torch.nn.Module):
    """Wraps an EfficientNet so that ``forward`` returns the pooled embedding.

    Args:
        model: An ``efficientnet_lite_pytorch.EfficientNet`` in eval mode.
    """

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, S, S) float32 -> (B, D) mean of the final conv map."""
        # The library is untyped (Module.__getattr__), hence the cast.
        extract = cast(Callable[[torch.Tensor], torch.Tensor], self.model.extract_features)
        return extract(x).mean(dim=(2, 3))  # (B, D, h, w) -> (B, D)


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


class TorchEngine(Engine):
    """Eager PyTorch under ``inference_mode``.

    Args:
        model: The EfficientNet (eval mode, frozen).
        channels_last: Run in NHWC memory format. Off by default: measured no
            faster than NCHW on this network (``benchmarks/RESULTS.md``).
    """

    name = "torch"

    def __init__(self, model: torch.nn.Module, *, channels_last: bool = False) -> None:
        self.module = PooledFeatures(model).eval()
        self.channels_last = channels_last
        if channels_last:
            # torch's stubs omit Module.to(memory_format=...), which it accepts.
            self.module = self.module.to(memory_format=torch.channels_last)  # type: ignore[call-overload]

    def embed(self, batch: np.ndarray) -> np.ndarray:
        """See :meth:`Engine.embed`."""
        x = torch.from_numpy(np.ascontiguousarray(batch, dtype=np.float32))
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.inference_mode():
            pooled = self.module(x)
        return np.asarray(pooled.numpy(), dtype=np.float32)


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

    def embed(self, batch: np.ndarray) -> np.ndarray:
        """See :meth:`Engine.embed`."""
        x = np.ascontiguousarray(batch, dtype=np.float32)
        (out,) = self._session.run([_OUTPUT], {_INPUT: x})
        return np.asarray(out, dtype=np.float32)


def export_onnx(model: torch.nn.Module, input_size: int) -> bytes:
    """Export the pooled-embedding network to ONNX with a dynamic batch axis.

    Args:
        model: The EfficientNet (eval mode).
        input_size: Side S of the network input.

    Returns:
        The serialized ONNX model: input ``images`` (B, 3, S, S), output
        ``embedding`` (B, D).

    Raises:
        ModelError: The export failed.
    """
    module = PooledFeatures(model).eval()
    dummy = torch.zeros(1, 3, input_size, input_size)
    try:
        with tempfile.TemporaryDirectory(prefix="cartag-onnx-") as tmp:
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
                    input_names=[_INPUT],
                    output_names=[_OUTPUT],
                    dynamic_axes={_INPUT: {0: "batch"}, _OUTPUT: {0: "batch"}},
                    opset_version=ONNX_OPSET,
                    do_constant_folding=True,
                    dynamo=False,
                )
            return path.read_bytes()
    except (
        OSError,
        RuntimeError,
        ValueError,
        TypeError,
        torch.onnx.errors.OnnxExporterError,
    ) as exc:
        raise ModelError(f"cannot export the backbone to ONNX: {exc}") from exc


def smoke_input(input_size: int) -> np.ndarray:
    """The fixed input of the parity check: float32 (2, 3, S, S), seeded normal noise.

    Two images, so that the dynamic batch axis is exercised too.
    """
    rng = np.random.default_rng(20261126)
    return rng.standard_normal((2, 3, input_size, input_size)).astype(np.float32)


def check_parity(engine: Engine, reference: Engine, input_size: int) -> float:
    """Compare two engines on :func:`smoke_input`.

    Returns:
        The largest absolute difference of their embeddings.

    Raises:
        ModelError: Shapes differ or the difference is at least ``PARITY_ATOL``.
    """
    x = smoke_input(input_size)
    want = reference.embed(x)
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


def _write_atomic(path: Path, data: bytes) -> None:
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


def load_onnx_engine(
    model: torch.nn.Module,
    input_size: int,
    *,
    reference: Engine,
    cache_path: Path | None,
    threads: int = 0,
) -> OnnxEngine:
    """An :class:`OnnxEngine` for ``model``: from the cache if valid, else freshly exported.

    Args:
        model: The EfficientNet whose weights to run.
        input_size: Side S of the network input.
        reference: The torch engine the result must agree with.
        cache_path: Where the exported model is kept; None = export to memory only.
        threads: Intra-op threads (0 = physical cores).

    Raises:
        ModelError: Export, load or the parity check failed (on a fresh export).
    """
    if cache_path is not None and cache_path.is_file():
        try:
            engine = OnnxEngine(cache_path, threads=threads)
            check_parity(engine, reference, input_size)
            return engine
        except ModelError as exc:
            log.warning(
                "cached ONNX backbone %s is unusable (%s); exporting it again", cache_path, exc
            )
    data = export_onnx(model, input_size)
    engine = OnnxEngine(data, threads=threads)
    diff = check_parity(engine, reference, input_size)
    if cache_path is not None:
        try:
            _write_atomic(cache_path, data)
        except OSError as exc:
            log.warning(
                "cannot cache the ONNX backbone at %s (%s); using it from memory", cache_path, exc
            )
        else:
            log.info("exported the ONNX backbone to %s (max diff to torch %.1e)", cache_path, diff)
    return engine
