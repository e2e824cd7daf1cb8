"""How far a JPEG may be draft-decoded below the network's input before answers change.

The service decodes a JPEG at the smallest libjpeg scale (1/2, 1/4, 1/8) whose shorter
side stays >= a draft size, then squeezes it to the network's S x S input. A 1024x768
listing photo decodes at 1/2 (512x384) for S = 224, since 1/4 would give 192 rows; at
1/4 the decode and the squeeze cost about half as much, but the network sees 192 rows
stretched to 224. This measures what that costs in answers, on every labelled photo of
the shared data re-encoded at listing size (centre crop, Lanczos, quality 82, 4:2:0,
as ``classify_throughput`` does), with the served model (its int8 or fp32 backbone as
the settings say):

- per source (vcr held-out, vcr train split, vcor, type-train): type macro-recall and
  color top-1 under each draft size, and the share of answers that differ;
- the mean and largest pHash distance between the two views (stored fixes find their
  images within a distance).

Usage::

    .venv/bin/python -m benchmarks.draft_scale --data ../shared/data [--size 1024x768]
        [--drafts 260,192] [--limit N]
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from benchmarks.classify_throughput import SHARED, cpu_name
from benchmarks.peers import parse_size, resized_jpeg
from cartag.blas import limit_blas_threads
from cartag.imaging.decode import decode_image
from cartag.imaging.keys import hamming, phash
from cartag.models.classifier import Classifier, load_classifier
from cartag.settings import get_settings
from cartag.training.datasets.sources import SourceRow, read_sources
from cartag.vocab import COLORS, IMAGE_TYPES


def answers(
    classifier: Classifier, photos: Sequence[bytes], draft: int, threads: int
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """(N,) type and (N,) color indices and N pHashes of the photos at one draft size."""

    def view(data: bytes) -> object:
        image = decode_image(data, max_pixels=10**8, draft_size=draft).image
        return classifier.prepare(image)

    with ThreadPoolExecutor(max_workers=threads) as pool:
        views = list(pool.map(view, photos))
    types, colors = [], []
    for start in range(0, len(views), 64):
        for p in classifier.predict(views[start : start + 64]):  # type: ignore[arg-type]
            types.append(IMAGE_TYPES.index(p.image_type))
            colors.append(-1 if p.color is None else COLORS.index(p.color))
    hashes = [phash(v) for v in views]  # type: ignore[arg-type]
    return np.asarray(types), np.asarray(colors), hashes


def macro_recall(y: np.ndarray, pred: np.ndarray) -> float:
    """Mean recall over the classes present in ``y``."""
    return float(np.mean([np.mean(pred[y == c] == c) for c in np.unique(y)]))


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--data", type=Path, default=SHARED.parent)
    parser.add_argument("--size", type=parse_size, default=parse_size("1024x768"))
    parser.add_argument("--drafts", default="260,192", help="draft sizes to compare")
    parser.add_argument("--limit", type=int, default=0, help="rows per source (0: all)")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    drafts = [int(d) for d in args.drafts.split(",")]
    settings = get_settings()
    limit_blas_threads(settings.blas_threads)
    classifier = load_classifier(settings)
    rows: list[SourceRow] = read_sources(args.data, split_vcr=True)
    if args.limit:
        kept: dict[str, int] = {}
        rows = [
            r
            for r in rows
            if kept.setdefault(r.source, 0) < args.limit
            and not kept.__setitem__(r.source, kept[r.source] + 1)
        ]
    started = time.monotonic()
    with ThreadPoolExecutor(max_workers=args.threads) as pool:
        photos = list(
            pool.map(lambda r: resized_jpeg((args.data / r.path).read_bytes(), args.size, 82), rows)
        )
    print(
        f"cpu: {cpu_name()}; model {classifier.version}, backbone "
        f"{getattr(classifier, 'backbone_id', None)}"
    )
    print(
        f"{len(rows)} photos re-encoded at {args.size[0]}x{args.size[1]} "
        f"in {time.monotonic() - started:.0f} s"
    )
    results = {d: answers(classifier, photos, d, args.threads) for d in drafts}
    sources = np.asarray([r.source for r in rows])
    y_type = np.asarray(
        [-1 if r.image_type is None else IMAGE_TYPES.index(r.image_type) for r in rows]
    )
    y_color = np.asarray([-1 if r.color is None else COLORS.index(r.color) for r in rows])
    base = drafts[0]
    print(
        "\n| source | draft | photos | type macro-recall | color top-1 | type changed | "
        "color changed |\n|---|---:|---:|---:|---:|---:|---:|"
    )
    for source in dict.fromkeys(sources):
        here = sources == source
        for d in drafts:
            t, c, _ = results[d]
            typed = here & (y_type >= 0)
            colored = here & (y_color >= 0)
            tr = macro_recall(y_type[typed], t[typed]) if typed.any() else float("nan")
            ct = float(np.mean(c[colored] == y_color[colored])) if colored.any() else float("nan")
            t_changed = np.mean(t[here] != results[base][0][here])
            c_changed = np.mean(c[here] != results[base][1][here])
            print(
                f"| {source} | {d} | {int(here.sum())} | {tr:.4f} | {ct:.4f} | "
                f"{t_changed:.2%} | {c_changed:.2%} |"
            )
    for d in drafts[1:]:
        dist = [hamming(a, b) for a, b in zip(results[base][2], results[d][2], strict=True)]
        print(
            f"\npHash distance, draft {d} vs {base}: mean {np.mean(dist):.2f}, "
            f"max {max(dist)}, > 4 in {np.mean(np.asarray(dist) > 4):.2%}"
        )


if __name__ == "__main__":
    main()
