"""Raw backbone throughput, fp32 against int8, alternated in one run.

The bundled model's float backbone and its int8 backbone (the model folder's
``quantization.json``, :mod:`cartag.models.quantization`), both on ONNX Runtime,
on the same pre-processed real photos (../shared/data/vcr-train), batch 4, in two
plans:

- ``1 x 1``: one single-threaded session, batches one after the other;
- ``2 x 1``: two batches at once on single-threaded runs (the service's default
  plan on 2 cores, :func:`cartag.models.engine.inference_plan`).

fp32 and int8 take turns inside every repeat (so load from other processes hits
both alike); each cell is the best repeat. Also prints the ONNX file sizes. Only
the ratios mean something on a shared machine.

Usage::

    .venv/bin/python -m benchmarks.int8 [--repeats 5] [--images 64] [--batch 4]
"""

from __future__ import annotations

import argparse
import io
import os
from pathlib import Path

from PIL import Image

from benchmarks.classify_throughput import RawBackbone
from cartag.models.backbone import PREPROCESS_ID
from cartag.settings import Settings
from tests.support.images import real_photos

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "vcr-train"
PLANS = {"1 x 1": (1, 1), "2 x 1": (2, 2)}


def main() -> None:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--images", type=int, default=64)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--data", type=Path, default=SHARED)
    parser.add_argument("--data-dir", type=Path, default=Path("cartag-data"), help="ONNX cache")
    args = parser.parse_args()
    photos = []
    for path in real_photos(args.data, args.images):
        buffer = io.BytesIO()
        Image.open(path).convert("RGB").save(buffer, "JPEG", quality=95)
        photos.append(buffer.getvalue())
    raws = {}
    for plan, (workers, threads) in PLANS.items():
        settings = Settings(
            data_dir=args.data_dir,
            engine="onnx",
            inference_batch_size=args.batch,
            inference_workers=workers,
            torch_threads=threads,
        )
        for precision in ("fp32", "int8"):
            raws[plan, precision] = RawBackbone(photos, settings, precision)
    best = dict.fromkeys(raws, 0.0)
    load_before = os.getloadavg()[0]
    for _ in range(args.repeats):
        for key, raw in raws.items():
            best[key] = max(best[key], raw.rate(repeats=1))
    load_after = os.getloadavg()[0]
    print(
        f"{raws['1 x 1', 'fp32'].count} photos, batch {args.batch}, best of {args.repeats} "
        f"alternated rounds; load average {load_before:.2f} -> {load_after:.2f}"
    )
    print()
    print("| plan (runs x threads) | fp32 images/s | int8 images/s | int8 / fp32 |")
    print("|---|---:|---:|---:|")
    for plan in PLANS:
        fp32, int8 = best[plan, "fp32"], best[plan, "int8"]
        print(f"| {plan} | {fp32:.1f} | {int8:.1f} | {int8 / fp32:.2f}x |")
    print()
    cache = args.data_dir / "cache" / "onnx"
    fp32_id = raws["1 x 1", "fp32"].backbone.backbone_id
    tag = raws["1 x 1", "int8"].backbone.backbone_id.rsplit("@", 1)[1]
    for precision, name in (("fp32", ""), ("int8", f"-int8-{tag}")):
        path = cache / f"{fp32_id}-{PREPROCESS_ID}{name}.onnx"
        print(f"{precision} model file: {path.stat().st_size / 1e6:.1f} MB ({path.name})")


if __name__ == "__main__":
    main()
