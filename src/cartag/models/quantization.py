"""The int8 backbone of a model folder: its shipped activation ranges, identity and cache.

A model folder may carry ``quantization.json`` (written by the build,
:mod:`cartag.training.bundled.quantization`): the activation range of every tensor
of the prepared float graph, measured on real training photos, with the options
of the quantizer, how the photos were chosen, and the int8 model's output on the
smoke input where it was built. The service has no photos: it exports the float
network (child process, as for fp32), then quantizes it with those ranges in a
second child (:mod:`cartag.models.quantize`), and caches the result under
``<cache_dir>/onnx/`` keyed by the network and the ranges' digest.

int8 embeddings are not the float ones (cosine ~0.996), so they have their own
backbone id, ``<fp32 id>+int8@<digest[:8]>`` (:func:`int8_backbone_id`): heads
record it, embedding caches key on it, and a head fitted on the float embeddings
is refused on int8 ones.

This module imports neither torch nor onnx.
"""

from __future__ import annotations

import hashlib
import json
import logging
import subprocess
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Final

import numpy as np

from cartag.errors import ModelError
from cartag.models.engine import (
    Engine,
    OnnxEngine,
    decode_reference,
    encode_reference,
    load_cached_onnx,
    smoke_input,
    write_atomic,
)
from cartag.models.scratch import scratch_dir

log = logging.getLogger(__name__)

QUANTIZATION_NAME: Final[str] = "quantization.json"
QUANTIZATION_FORMAT: Final[str] = "cartag-int8-ranges/1"
# Largest relative distance |load - build| / |build| (L2, per smoke image) allowed
# between the int8 model made here and the one the heads were fitted on. The integer
# kernels agree exactly across CPUs (weight pairs bounded for those without VNNI), but
# the stem convolution stays float and its output is quantized, so another float
# kernel puts a few stem values one step apart (ORT's two conv kernels on one CPU: 2 of
# 802,816). On a Sapphire Rapids CPU the smoke embeddings moved by 1.0-1.5 % from the
# AMD EPYC build's, and the int8 cross-source figures by at most one photo (RESULTS,
# "Int8 on Sapphire Rapids"). Int8's own distance from fp32 there is 5 %; saturating
# kernels (int16 pairs) moved them by far more (cosine to fp32 down to 0.74), and so
# would another quantizer release.
DRIFT_RTOL: Final[float] = 0.03
# Seconds a quantization child may take (lite0: ~10 s on 2 shared cores).
QUANTIZE_TIMEOUT_S: Final[float] = 600.0


@dataclass(frozen=True)
class QuantOptions:
    """How the quantizer is asked to quantize (part of the digest).

    Attributes:
        per_channel: One weight scale per output channel.
        reduce_range: 7-bit weights (for CPUs without VNNI).
        activations: ``uint8`` or ``int8``.
        weights: ``int8`` or ``uint8``.
        exclude_nodes: Nodes of the prepared graph left in float.
        pair_limit: 0, or the largest sum of two neighbouring int8 weights of a
            channel (same sign): scales are raised where needed so that CPUs
            without VNNI cannot saturate (:mod:`cartag.models.pair_bound`).
    """

    per_channel: bool = True
    reduce_range: bool = False
    activations: str = "uint8"
    weights: str = "int8"
    exclude_nodes: tuple[str, ...] = ()
    pair_limit: int = 0


@dataclass(frozen=True)
class Quantization:
    """The content of ``quantization.json``.

    Attributes:
        ranges: Tensor name -> (min, max) float32 activation range.
        options: Quantizer options.
        calibration: What measured the ranges (method, photos, how they were chosen,
            onnxruntime version); informative, not part of the digest.
        reference: float32 (2, D) the int8 model's embeddings of the smoke input
            where it was built, or None.
    """

    ranges: dict[str, tuple[float, float]]
    options: QuantOptions = QuantOptions()
    calibration: dict[str, Any] = field(default_factory=dict)
    reference: np.ndarray | None = None

    @property
    def digest(self) -> str:
        """SHA-256 of the ranges and options: what decides the int8 model's weights."""
        return ranges_digest(self.ranges, self.options)

    @property
    def tag(self) -> str:
        """``digest[:8]``."""
        return self.digest[:8]


def ranges_digest(ranges: dict[str, tuple[float, float]], options: QuantOptions) -> str:
    """SHA-256 of canonical JSON of the ranges (float32 values as repr) and options."""
    fields = asdict(options)
    if not options.pair_limit:
        del fields["pair_limit"]  # files written before the option digest as they did
    payload = {
        "options": fields,
        "ranges": {k: [repr(float(lo)), repr(float(hi))] for k, (lo, hi) in sorted(ranges.items())},
    }
    text = json.dumps(payload, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def int8_backbone_id(backbone_id: str, quantization: Quantization) -> str:
    """``<fp32 backbone id>+int8@<ranges digest[:8]>``."""
    return f"{backbone_id}+int8@{quantization.tag}"


def write_quantization(path: Path, quantization: Quantization) -> None:
    """Write ``quantization.json`` (with its digest, which :func:`read_quantization` checks)."""
    body: dict[str, Any] = {
        "format": QUANTIZATION_FORMAT,
        "sha256": quantization.digest,
        "options": {**asdict(quantization.options)},
        "calibration": quantization.calibration,
        "reference": None
        if quantization.reference is None
        else encode_reference(quantization.reference),
        "ranges": {k: [lo, hi] for k, (lo, hi) in sorted(quantization.ranges.items())},
    }
    body["options"]["exclude_nodes"] = list(quantization.options.exclude_nodes)
    path.write_text(json.dumps(body, indent=1) + "\n", encoding="utf-8")


def read_quantization(path: Path) -> Quantization:
    """Read and check ``quantization.json``.

    Raises:
        ModelError: Missing, malformed, or its ranges do not match its recorded digest.
    """
    hint = (
        "rebuild the model folder with `cartag models build-bundled`, or set CARTAG_PRECISION=fp32"
    )
    try:
        body = json.loads(path.read_text(encoding="utf-8"))
        if body.get("format") != QUANTIZATION_FORMAT:
            raise ValueError(f"format is {body.get('format')!r}, not {QUANTIZATION_FORMAT!r}")
        options = dict(body["options"])
        options["exclude_nodes"] = tuple(options.get("exclude_nodes", ()))
        reference = body.get("reference")
        quantization = Quantization(
            ranges={str(k): (float(v[0]), float(v[1])) for k, v in body["ranges"].items()},
            options=QuantOptions(**options),
            calibration=dict(body.get("calibration", {})),
            reference=None if reference is None else decode_reference(str(reference)),
        )
    except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError, IndexError) as exc:
        raise ModelError(
            f"{path} is not a usable {QUANTIZATION_FORMAT} file ({exc}); {hint}"
        ) from exc
    if quantization.digest != body.get("sha256"):
        raise ModelError(f"{path}: the ranges do not match their recorded sha256; {hint}")
    return quantization


def quantize_in_child(fp32: bytes | Path, quantization_path: Path, network: str) -> bytes:
    """Quantize a float model in a child process (:mod:`cartag.models.quantize`).

    Returns:
        The int8 model's bytes.

    Raises:
        ModelError: The child failed (its last error line is in the message) or timed out.
    """
    with scratch_dir("cartag-int8-") as tmp:
        model = fp32 if isinstance(fp32, Path) else Path(tmp) / "fp32.onnx"
        if not isinstance(fp32, Path):
            model.write_bytes(fp32)
        out = Path(tmp) / "int8.onnx"
        command = [sys.executable, "-m", "cartag.models.quantize", "--model", str(model)]
        command += ["--quantization", str(quantization_path), "--network", network]
        command += ["--out", str(out)]
        try:
            done = subprocess.run(
                command, capture_output=True, text=True, timeout=QUANTIZE_TIMEOUT_S, check=False
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise ModelError(f"the quantization process did not finish: {exc}") from exc
        if done.returncode != 0:
            lines = (done.stderr or done.stdout).strip().splitlines()
            detail = lines[-1].removeprefix("error: ") if lines else f"exit {done.returncode}"
            raise ModelError(f"quantizing the backbone to int8 failed: {detail}")
        try:
            return out.read_bytes()
        except OSError as exc:
            raise ModelError(f"the quantization process wrote no model: {exc}") from exc


def check_drift(engine: Engine, quantization: Quantization, input_size: int) -> float:
    """Compare an int8 engine with the build's int8 output on the smoke input.

    Returns:
        The largest relative L2 distance over the smoke images, ``|got - want| / |want|``
        (0.0 when the file records no reference).

    Raises:
        ModelError: The distance is at least :data:`DRIFT_RTOL`.
    """
    if quantization.reference is None:
        return 0.0
    got = engine.embed(smoke_input(input_size))
    want = quantization.reference
    if got.shape != want.shape:
        diff = float("inf")
    else:
        norms = np.maximum(np.linalg.norm(want, axis=1), np.finfo(np.float32).tiny)
        diff = float(np.max(np.linalg.norm(got - want, axis=1) / norms))
    if not np.isfinite(diff) or diff >= DRIFT_RTOL:
        cause = "another CPU's int8 kernels or another onnxruntime release"
        if not quantization.options.pair_limit and _lacks_vnni():
            cause = (
                "this CPU has no VNNI, and the model's int8 weights were not bounded for such "
                "CPUs (quantization.json has no pair_limit: a build from before it)"
            )
        raise ModelError(
            f"the int8 backbone built here differs from the one its heads were fitted on by "
            f"{diff:.3g} of its embeddings' length (limit {DRIFT_RTOL}): {cause}; serve fp32 "
            "(CARTAG_PRECISION=fp32) or rebuild the model with `cartag models build-bundled`"
        )
    # 0 on the build's CPU family; a few percent says another float kernel ran the stem.
    log.info(
        "int8 backbone +int8@%s is %.2g from the build's output (limit %s)",
        quantization.tag,
        diff,
        DRIFT_RTOL,
    )
    return diff


# CPU flags of x86 instructions that sum uint8 x int8 products into int32 (no saturation).
VNNI_FLAGS: Final[frozenset[str]] = frozenset({"avx512_vnni", "avx_vnni", "amx_int8"})


def cpu_info(cpuinfo: Path = Path("/proc/cpuinfo")) -> dict[str, str]:
    """The fields of the first processor in ``/proc/cpuinfo`` (empty where unreadable)."""
    try:
        text = cpuinfo.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return {}
    fields: dict[str, str] = {}
    for line in text.splitlines():
        if not line.strip():
            if fields:
                break  # the first processor's block ends here
            continue
        key, _, value = line.partition(":")
        fields.setdefault(key.strip(), value.strip())
    return fields


def _lacks_vnni(cpuinfo: Path = Path("/proc/cpuinfo")) -> bool:
    """Whether this is an x86 CPU without VNNI (unknown CPUs: False)."""
    flags = set(cpu_info(cpuinfo).get("flags", "").split())
    return "avx2" in flags and not flags & VNNI_FLAGS


def int8_engine(
    fp32: Any,
    quantization_path: Path,
    network: str,
    input_size: int,
    *,
    threads: int = 0,
    cache_path: Path | None = None,
) -> OnnxEngine:
    """The int8 engine: from the cache if it checks out, else quantized (and cached).

    Args:
        fp32: A callable returning the checked float model (bytes or a path); called
            only when the int8 model must be made.
        quantization_path: The model folder's ``quantization.json``.
        network: The int8 network's identity (recorded in and checked against the file).
        input_size: Side S of the network input.
        threads: Intra-op threads (0 = physical cores).
        cache_path: Where the int8 model is cached; None = not cached.

    Raises:
        ModelError: The ranges file is unusable, quantization failed, or the model
            does not reproduce the build's output (:func:`check_drift`).
    """
    quantization = read_quantization(quantization_path)
    if cache_path is not None and cache_path.is_file():
        try:
            engine = load_cached_onnx(cache_path, network, input_size, threads=threads)
            check_drift(engine, quantization, input_size)
            return engine
        except ModelError as exc:
            log.warning(
                "cached int8 backbone %s is unusable (%s); quantizing again", cache_path, exc
            )
    data = quantize_in_child(fp32(), quantization_path, network)
    engine = load_cached_onnx(data, network, input_size, threads=threads)
    check_drift(engine, quantization, input_size)
    if cache_path is not None:
        try:
            write_atomic(cache_path, data)
        except OSError as exc:
            log.warning(
                "cannot cache the int8 backbone at %s (%s); using it from memory", cache_path, exc
            )
        else:
            log.info("quantized the backbone to int8 at %s", cache_path)
    return engine
