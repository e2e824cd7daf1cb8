"""Raw backbone throughput: engine x variant x batch size, side by side in one run.

Measures images/s of the backbone alone on pre-processed tensors (real photos
from ../shared/data/vcr-train when present, else seeded noise) for:

- ``torch``: eager PyTorch under inference_mode (:class:`TorchEngine`),
- ``torch-cl``: the same in channels_last memory format,
- ``onnx``: ONNX Runtime, CPU provider, all graph optimisations, no spinning
  (:class:`OnnxEngine`, the service's engine),
- ``onnx-spin``: the same with spinning intra-op threads (ORT's default),
- ``onnx-par``: ``--threads`` single-threaded ONNX Runtime runs at once, each
  on its own batch of the given size (the service's default plan,
  :func:`cartag.models.engine.inference_plan`),
- ``compile``: ``torch.compile`` (inductor, dynamic batch), only with
  ``--compile``: it compiles for minutes on a small machine.

Engines are measured round-robin inside every repeat, so that load from other
processes hits them alike; each cell is the best of the repeats. Both torch and
ONNX Runtime get ``--threads`` intra-op threads (default: physical cores).
``--busy N`` keeps N extra threads doing numpy work meanwhile, standing in for
the service's downloads, decoding and storage on the same cores.

Usage::

    .venv/bin/python -m benchmarks.engines [--variants efficientnet-lite0 ...]
        [--batch-sizes 1 4 8 16 32] [--repeats 3] [--images 64] [--compile] [--markdown]
        [--engines torch onnx onnx-par] [--busy 1]
"""

from __future__ import annotations

import argparse
import contextlib
import math
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from cartag.models.backbone import Backbone
from cartag.models.engine import Engine, OnnxEngine, check_parity, physical_cores
from cartag.models.networks import PooledFeatures, TorchEngine
from cartag.models.onnx_export import export_onnx
from tests.support.images import real_photos

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "vcr-train"
VARIANTS = ("efficientnet-lite0", "efficientnet-lite1", "efficientnet-lite2")
BATCH_SIZES = (1, 4, 8, 16, 32)


class CompiledEngine(Engine):
    """``torch.compile`` of the pooled-embedding module, one graph for every batch size."""

    name = "compile"

    def __init__(self, model: torch.nn.Module) -> None:
        self._module = torch.compile(PooledFeatures(model).eval(), dynamic=True)

    def embed(self, batch: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            out = self._module(torch.from_numpy(np.ascontiguousarray(batch)))
        return np.asarray(out.numpy(), dtype=np.float32)


class ParallelEngine(Engine):
    """``copies`` runs of one engine at once, each on the batch; returns the first output."""

    name = "parallel"

    def __init__(self, inner: Engine, copies: int) -> None:
        self.inner = inner
        self.copies = copies
        self._pool = ThreadPoolExecutor(max_workers=copies)

    def embed(self, batch: np.ndarray) -> np.ndarray:
        outputs = list(self._pool.map(self.inner.embed, [batch] * self.copies))
        return outputs[0]


@contextlib.contextmanager
def busy(threads: int) -> Iterator[None]:
    """Keep ``threads`` threads doing numpy work (matrix products, short sleeps)."""
    stop = threading.Event()

    def work() -> None:
        a = np.random.default_rng(0).random((160, 160))
        while not stop.is_set():
            for _ in range(20):
                a = a @ a.T / 160.0
            time.sleep(0.002)

    workers = [threading.Thread(target=work, daemon=True) for _ in range(threads)]
    for worker in workers:
        worker.start()
    try:
        yield
    finally:
        stop.set()
        for worker in workers:
            worker.join()


def inputs(backbone: Backbone, n: int, data: Path) -> np.ndarray:
    """float32 (n, 3, S, S): real photos if available, else seeded noise."""
    if data.is_dir():
        return backbone.preprocess([Image.open(p) for p in real_photos(data, n)])
    size = backbone.input_size
    rng = np.random.default_rng(0)
    return rng.standard_normal((n, 3, size, size)).astype(np.float32)


def rate(engine: Engine, batch: np.ndarray, images: int) -> float:
    """Images/s of ``engine`` embedding ``batch`` over and over (at least ``images``)."""
    per_call = len(batch) * (engine.copies if isinstance(engine, ParallelEngine) else 1)
    calls = max(2, math.ceil(images / per_call))
    start = time.perf_counter()
    for _ in range(calls):
        engine.embed(batch)
    return calls * per_call / (time.perf_counter() - start)


def build_engines(
    backbone: Backbone, names: list[str], threads: int
) -> tuple[dict[str, Engine], dict[str, float]]:
    """The engines to compare and the seconds each took to build (export, compile)."""
    model = backbone.network
    engines: dict[str, Engine] = {}
    setup: dict[str, float] = {}
    reference = TorchEngine(model)
    onnx_bytes: bytes | None = None
    for name in names:
        start = time.perf_counter()
        if name == "torch":
            engines[name] = reference
        elif name == "torch-cl":
            engines[name] = TorchEngine(model, channels_last=True)
        elif name in ("onnx", "onnx-spin"):
            if onnx_bytes is None:
                onnx_bytes = export_onnx(model, backbone.input_size)
            engines[name] = OnnxEngine(onnx_bytes, threads=threads, spin=name == "onnx-spin")
        elif name == "onnx-par":
            if onnx_bytes is None:
                onnx_bytes = export_onnx(model, backbone.input_size)
            copies = threads or physical_cores()
            engines[name] = ParallelEngine(OnnxEngine(onnx_bytes, threads=1), copies)
        elif name == "compile":
            engines[name] = CompiledEngine(model)
            engines[name].embed(np.zeros((2, 3, backbone.input_size, backbone.input_size), "f"))
        else:
            raise SystemExit(f"unknown engine {name!r}")
        check_parity(engines[name], reference, backbone.input_size)
        setup[name] = time.perf_counter() - start
    return engines, setup


def measure(
    variant: str,
    names: list[str],
    batch_sizes: list[int],
    repeats: int,
    images: int,
    threads: int,
    data: Path,
    log: Callable[[str], None],
    busy_threads: int = 0,
) -> dict[tuple[str, int], float]:
    """Best images/s for every (engine, batch size) of one variant."""
    backbone = Backbone.load(variant, threads=threads)
    engines, setup = build_engines(backbone, names, threads)
    log(f"{variant}: setup " + ", ".join(f"{n} {s:.1f}s" for n, s in setup.items()))
    x = inputs(backbone, max(batch_sizes), data)
    for engine in engines.values():  # warm-up: first calls allocate and (re)compile
        for bs in batch_sizes:
            engine.embed(x[:bs])
    best: dict[tuple[str, int], float] = {}
    with busy(busy_threads):
        for r in range(repeats):
            for bs in batch_sizes:
                for name, engine in engines.items():
                    value = rate(engine, x[:bs], images)
                    best[name, bs] = max(best.get((name, bs), 0.0), value)
            log(f"{variant}: repeat {r + 1}/{repeats} done")
    return best


def table(
    results: dict[str, dict[tuple[str, int], float]],
    names: list[str],
    batch_sizes: list[int],
    markdown: bool,
) -> str:
    """The results as a fixed-width or markdown table, with onnx/torch ratios."""
    ratio = "onnx" in names and "torch" in names
    header = ["variant", "batch", *names] + (["onnx/torch"] if ratio else [])
    rows = []
    for variant, best in results.items():
        for bs in batch_sizes:
            row = [variant, str(bs)] + [f"{best[n, bs]:.1f}" for n in names]
            if ratio:
                row.append(f"{best['onnx', bs] / best['torch', bs]:.2f}x")
            rows.append(row)
    if markdown:
        lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        lines += ["| " + " | ".join(row) + " |" for row in rows]
        return "\n".join(lines)
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    return "\n".join(
        "  ".join(c.rjust(w) for c, w in zip(r, widths, strict=True)) for r in [header, *rows]
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS))
    parser.add_argument("--batch-sizes", nargs="+", type=int, default=list(BATCH_SIZES))
    parser.add_argument(
        "--engines", nargs="+", default=["torch", "torch-cl", "onnx", "onnx-spin", "onnx-par"]
    )
    parser.add_argument("--compile", action="store_true", help="also measure torch.compile")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--images", type=int, default=64, help="images per measurement")
    parser.add_argument("--threads", type=int, default=0, help="0 = physical cores")
    parser.add_argument("--data", type=Path, default=SHARED)
    parser.add_argument("--markdown", action="store_true")
    parser.add_argument("--busy", type=int, default=0, help="extra busy threads meanwhile")
    args = parser.parse_args()

    threads = args.threads or physical_cores()
    torch.set_num_threads(threads)
    names = list(args.engines) + (["compile"] if args.compile else [])
    print(
        f"torch {torch.__version__}, {threads} intra-op threads, engines: {', '.join(names)}, "
        f"{args.busy} busy thread(s)"
    )
    results = {
        variant: measure(
            variant,
            names,
            args.batch_sizes,
            args.repeats,
            args.images,
            threads,
            args.data,
            lambda line: print(line, flush=True),
            args.busy,
        )
        for variant in args.variants
    }
    print("\nimages/s (best of repeats):")
    print(table(results, names, args.batch_sizes, args.markdown))


if __name__ == "__main__":
    main()
