"""The dataset helpers: the stratified stable holdout and the embedding cache."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from cartag.training.dataset import EmbeddingCache, holdout_mask, image_key


def test_holdout_is_stratified_and_stable() -> None:
    keys = [f"vcr-train/{c}/{i}.jpg" for c in ("Red", "Blue") for i in range(50)]
    strata = [k.split("/")[1] for k in keys]
    mask = holdout_mask(keys, strata)
    assert mask[:50].sum() == 10 and mask[50:].sum() == 10
    # Adding another stratum leaves the existing assignment untouched.
    more = keys + [f"vcr-train/Green/{i}.jpg" for i in range(7)]
    assert (holdout_mask(more, [k.split("/")[1] for k in more])[:100] == mask).all()


def test_embedding_cache_computes_only_misses(tmp_path: Path) -> None:
    images = [Image.new("RGB", (4, 4), (i, 0, 0)) for i in range(5)]
    keys = [image_key(im) for im in images]
    calls: list[int] = []

    def embed(batch: list[Image.Image]) -> np.ndarray:
        calls.append(len(batch))
        return np.asarray([[im.getpixel((0, 0))[0], 1.0] for im in batch], dtype=np.float32)  # type: ignore[index]

    cache = EmbeddingCache(tmp_path, "test@1", "pre-v1")
    out = cache.get_or_compute(keys[:3], lambda i: images[i], embed, batch_size=2)
    assert calls == [2, 1] and out[:, 0].tolist() == [0, 1, 2]
    reopened = EmbeddingCache(tmp_path, "test@1", "pre-v1")
    out = reopened.get_or_compute(keys, lambda i: images[i], embed)
    assert calls == [2, 1, 2] and out[:, 0].tolist() == [0, 1, 2, 3, 4]
