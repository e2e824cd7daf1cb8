"""The drift reference of the bundled model on real photos: far share in and out of distribution.

For the bundled model's ``reference.npz`` (:mod:`cartag.models.reference`), the share of
images beyond its far threshold (the held-out p95 of fp32 novelty) on

- the held-out split of its own sources (photos the centroids never saw): should be ~5%;
- shifted sets, made from the same held-out photos or generated: placeholder designs the
  model never trained on (:mod:`cartag.training.datasets.placeholders_eval`), the photos
  in grey and blurred, turned a quarter, colour-inverted; and, as a control, new cards of
  the training placeholder designs (another seed: in distribution).

Each set is embedded by the float backbone (torch, as built) and by the int8 backbone the
service runs by default (``CARTAG_PRECISION=int8``: the folder's ``quantization.json``).
Embeddings go through the embedding cache, so a rerun is quick.

Usage::

    .venv/bin/python -m benchmarks.drift_reference --data ../shared/data \\
        --cache-dir cartag-data/cache [--n-shift 300]
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image, ImageFilter, ImageOps

from cartag.imaging.placeholders import generate_placeholders
from cartag.models.backbone import PREPROCESS_ID, Backbone
from cartag.models.classifier import BUNDLED_DIR
from cartag.models.folder import backbone_spec, read_config
from cartag.models.quantization import QUANTIZATION_NAME
from cartag.models.reference import load_reference
from cartag.training.bundled.corpus import build_corpus_all
from cartag.training.datasets.dataset import file_loader, image_key
from cartag.training.datasets.embedding_cache import EmbeddingCache
from cartag.training.datasets.placeholders_eval import generate_eval_placeholders

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"


def _grey_blur(image: Image.Image) -> Image.Image:
    return ImageOps.grayscale(image).convert("RGB").filter(ImageFilter.GaussianBlur(6))


def _quarter(image: Image.Image) -> Image.Image:
    return image.rotate(90, expand=True)


def _inverted(image: Image.Image) -> Image.Image:
    return ImageOps.invert(image.convert("RGB"))


def _embed(
    backbone: Backbone, cache_dir: Path, images: list[Image.Image], keys: list[str] | None = None
) -> np.ndarray:
    cache = EmbeddingCache.in_folder(cache_dir, backbone.backbone_id, PREPROCESS_ID)
    keys = keys or [image_key(im) for im in images]
    return cache.get_or_compute(keys, lambda i: images[i], backbone.embed_images)


def main() -> None:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--data", type=Path, default=SHARED)
    parser.add_argument("--cache-dir", type=Path, default=Path("cartag-data/cache"))
    parser.add_argument("--n-shift", type=int, default=150, help="images per shifted set")
    parser.add_argument(
        "--held-sample", type=int, default=600, help="held-out photos embedded by int8 too"
    )
    parser.add_argument("--threads", type=int, default=0)
    args = parser.parse_args()
    config = read_config(BUNDLED_DIR)
    reference = load_reference(BUNDLED_DIR, config)
    assert reference is not None, "the bundled model has no reference.npz"
    spec = backbone_spec(BUNDLED_DIR, config)
    fp32 = Backbone.load(spec.variant, threads=args.threads, weights=spec.weights)
    int8 = Backbone.load(
        spec.variant,
        threads=args.threads,
        engine="onnx",
        cache_dir=args.cache_dir,
        weights=spec.weights,
        quantization=BUNDLED_DIR / QUANTIZATION_NAME,
    )
    training = config["training"]
    corpus = build_corpus_all(
        args.data,
        list(training["sources"]),
        fp32,
        args.cache_dir,
        int(training["placeholders"]["n"]),
        int(training["placeholders"]["seed"]),
    )
    held = np.flatnonzero(corpus.holdout)
    real_held = [int(i) for i in held if corpus.files[i] is not None]
    rng = np.random.default_rng(0)
    shift_rows = rng.choice(real_held, size=min(args.n_shift, len(real_held)), replace=False)
    photos = [file_loader([corpus.files[i]])(0) for i in shift_rows]  # type: ignore[list-item]
    n = len(photos)
    sets: dict[str, Callable[[], list[Image.Image]]] = {
        "placeholder designs never trained on": lambda: [
            p.image for p in generate_eval_placeholders(n, seed=0)
        ],
        "held-out photos, grey + blurred": lambda: [_grey_blur(p) for p in photos],
        "held-out photos, turned a quarter": lambda: [_quarter(p) for p in photos],
        "held-out photos, colour-inverted": lambda: [_inverted(p) for p in photos],
        "control: training placeholder designs, new seed": lambda: [
            p.image for p in generate_placeholders(n, seed=1)
        ],
    }
    print(
        f"reference: K={reference.centroids.shape[0]}, far above {reference.far_threshold:.4f} "
        f"(held-out fp32 quantiles {reference.quantiles})"
    )
    print("| set | n | far share fp32 | far share int8 | mean novelty fp32 | int8 |")
    print("|---|---|---|---|---|---|")

    def row(name: str, emb32: np.ndarray, emb8: np.ndarray) -> None:
        n32, n8 = reference.novelty(emb32), reference.novelty(emb8)
        t = reference.far_threshold
        print(
            f"| {name} | {len(n32)} | {(n32 > t).mean():.3f} | {(n8 > t).mean():.3f} | "
            f"{n32.mean():.4f} | {n8.mean():.4f} |"
        )

    def held_rows(rows: list[int]) -> tuple[np.ndarray, np.ndarray]:
        images_of = file_loader([corpus.files[i] for i in rows])  # type: ignore[misc]
        keys = [corpus.content[i] for i in rows]
        cache = EmbeddingCache.in_folder(args.cache_dir, int8.backbone_id, PREPROCESS_ID)
        emb8 = cache.get_or_compute(keys, images_of, int8.embed_images)
        return corpus.emb[rows], emb8

    for source in sorted(set(corpus.sources)):
        rows = [int(i) for i in held if corpus.sources[i] == source]
        novelty = reference.novelty(corpus.emb[rows])
        print(
            f"| held-out: {source} (fp32 only) | {len(rows)} | "
            f"{(novelty > reference.far_threshold).mean():.3f} | | {novelty.mean():.4f} | |"
        )
    sample = sorted(int(i) for i in rng.choice(real_held, size=args.held_sample, replace=False))
    row(f"held-out real photos, a sample of {len(sample)}", *held_rows(sample))
    for name, make in sets.items():
        images = make()
        row(name, _embed(fp32, args.cache_dir, images), _embed(int8, args.cache_dir, images))


if __name__ == "__main__":
    main()
