"""The per-image work of a first classify, stage by stage, on one thread.

``classify_throughput --profile`` says where a busy server's samples went; this says
what each stage costs alone, so the two can be read together (issue 18's "CPU outside
the model"). Every stage is the service's own function, on N real photos re-encoded
at ``--size`` as the throughput benchmark does, timed one thread at a time, best of
``--repeats``:

- ``sha256``: the content key of the downloaded bytes;
- ``decode``: :func:`~cartag.imaging.decode.decode_image` with the served model's draft size;
- ``prepare``: the squeeze to the network's input (:meth:`Classifier.prepare`);
- ``phash``: the perceptual hash of that view;
- ``color evidence``: the 64 x 64 reduction and :func:`features_from_rgb_batch`, per
  model batch;
- ``normalise``: the uint8 batch to the network's float input;
- ``backbone``: the served backbone (int8 or fp32, as the settings say) on those batches;
- ``heads``: type and color heads and the drift novelty, per batch.

The table ends with the sum outside the backbone: what would have to fit in issue 18's
3 ms. Threads and process overheads (HTTP, event loop, store) are not in it.

Usage::

    .venv/bin/python -m benchmarks.stages [--images 64] [--size 1600x1200] [--repeats 5]
        [--draft 191]
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from benchmarks.classify_throughput import SHARED, cpu_name, encoded_photos
from benchmarks.peers import parse_size
from cartag.blas import limit_blas_threads
from cartag.imaging.decode import decode_image
from cartag.imaging.keys import content_sha256, phash
from cartag.models.classifier import EmbeddingClassifier, load_classifier
from cartag.models.color_features import features_from_rgb_batch, reduce_image
from cartag.settings import Settings, get_settings
from tests.support.images import real_photos


def best_ms(work: Callable[[Any], object], items: Sequence[Any], repeats: int, count: int) -> float:
    """Best wall time of ``repeats`` passes of ``work`` over ``items``, in ms per image.

    Each result is dropped at once, as the service drops it: keeping them all would
    time fresh memory being paged in rather than the work.
    """
    for item in items[:2]:
        work(item)  # warm caches and lazy initialisation
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        for item in items:
            work(item)
        times.append(time.perf_counter() - started)
    return min(times) * 1000 / count


def stages(
    photos: list[bytes],
    classifier: EmbeddingClassifier,
    settings: Settings,
    repeats: int,
    draft: int | None = None,
) -> list[tuple[str, float]]:
    """(stage, ms per image) of each stage of the per-image path, one thread.

    ``draft``: the JPEG draft size to decode at instead of the model's own.
    """
    limits = {
        "max_pixels": settings.max_image_pixels,
        "max_decode_bytes": settings.max_decode_mb * 1024 * 1024,
        "draft_size": classifier.draft_size() if draft is None else draft,
    }
    decoded = [decode_image(data, **limits).image for data in photos]
    views = [classifier.prepare(image) for image in decoded]
    size = classifier.batch_size
    batches = [views[i : i + size] for i in range(0, len(views), size)]
    backbone = classifier.backbone
    inputs = [backbone.preprocess(batch) for batch in batches]
    embeddings = [backbone.embed(x) for x in inputs]
    n = len(photos)

    def evidence(batch: list[Image.Image]) -> np.ndarray:
        return features_from_rgb_batch(np.stack([reduce_image(v) for v in batch]))

    def heads(pair: tuple[np.ndarray, list[Image.Image]]) -> None:
        emb, batch = pair
        classifier.type_head.predict_proba(emb)
        classifier.color_head.predict_proba(np.concatenate([emb, evidence(batch)], axis=1))
        classifier.novelty(emb)

    pairs = list(zip(embeddings, batches, strict=True))
    return [
        ("sha256", best_ms(content_sha256, photos, repeats, n)),
        ("decode", best_ms(lambda d: decode_image(d, **limits), photos, repeats, n)),
        ("prepare", best_ms(classifier.prepare, decoded, repeats, n)),
        ("phash", best_ms(phash, views, repeats, n)),
        ("color evidence", best_ms(evidence, batches, repeats, n)),
        ("normalise", best_ms(backbone.preprocess, batches, repeats, n)),
        ("heads (color evidence included)", best_ms(heads, pairs, repeats, n)),
        ("backbone", best_ms(backbone.embed, inputs, repeats, n)),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--data", type=Path, default=SHARED)
    parser.add_argument("--images", type=int, default=64)
    parser.add_argument("--size", type=parse_size, default=parse_size("1600x1200"))
    parser.add_argument("--quality", type=int, default=82)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument(
        "--draft", type=int, default=None, help="draft size to decode at (default: the model's)"
    )
    args = parser.parse_args()
    settings = get_settings().model_copy(update={"torch_threads": 1, "inference_workers": 1})
    limit_blas_threads(settings.blas_threads)  # as `cartag serve` does
    classifier = load_classifier(settings)
    if not isinstance(classifier, EmbeddingClassifier):
        raise SystemExit("the configured model is not an embedding classifier")
    photos = encoded_photos(real_photos(args.data, args.images), args.size, args.quality)
    draft = classifier.draft_size() if args.draft is None else args.draft
    rows = stages(photos, classifier, settings, args.repeats, draft)
    width, height = args.size
    print(f"cpu:       {cpu_name()}")
    print(
        f"backbone:  {classifier.backbone.backbone_id} (batch {classifier.batch_size}, one thread)"
    )
    print(f"images:    {len(photos)} vcr-train photos re-encoded at {width}x{height}")
    print(f"draft:     decoded down to a shorter side >= {draft}\n")
    print("| stage | ms/image |\n|---|---:|")
    for name, ms in rows:
        print(f"| {name} | {ms:.3f} |")
    by_name = dict(rows)
    outside = sum(ms for name, ms in rows if name not in ("backbone", "color evidence"))
    print(f"| **outside the backbone** (color evidence counted once) | **{outside:.3f}** |")
    print(f"| backbone + outside | {outside + by_name['backbone']:.3f} |")


if __name__ == "__main__":
    main()
