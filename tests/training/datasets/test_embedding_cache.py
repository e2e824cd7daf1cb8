"""The embedding cache: only misses are computed, in batches, and kept for the next run."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from cartag.training.datasets.dataset import image_key
from cartag.training.datasets.embedding_cache import EmbeddingCache


def test_embedding_cache_computes_only_misses(tmp_path: Path) -> None:
    images = [Image.new("RGB", (4, 4), (i, 0, 0)) for i in range(5)]
    keys = [image_key(im) for im in images]
    calls: list[int] = []

    def embed(batch: list[Image.Image]) -> np.ndarray:
        calls.append(len(batch))
        return np.asarray([[im.getpixel((0, 0))[0], 1.0] for im in batch], dtype=np.float32)  # type: ignore[index]

    cache = EmbeddingCache.in_folder(tmp_path, "test@1", "pre-v1")
    out = cache.get_or_compute(keys[:3], lambda i: images[i], embed, batch_size=2)
    assert calls == [2, 1] and out[:, 0].tolist() == [0, 1, 2]
    reopened = EmbeddingCache.in_folder(tmp_path, "test@1", "pre-v1")
    out = reopened.get_or_compute(keys, lambda i: images[i], embed)
    assert calls == [2, 1, 2] and out[:, 0].tolist() == [0, 1, 2, 3, 4]


def test_embedding_cache_reports_progress_of_the_misses(tmp_path: Path) -> None:
    images = [Image.new("RGB", (4, 4), (i, 0, 0)) for i in range(3)]
    keys = [image_key(im) for im in images]
    seen: list[tuple[int, int]] = []

    def embed(batch: list[Image.Image]) -> np.ndarray:
        return np.ones((len(batch), 2), dtype=np.float32)

    cache = EmbeddingCache.in_folder(tmp_path, "test@1", "pre-v1")
    cache.get_or_compute(keys, lambda i: images[i], embed, 2, progress=lambda *a: seen.append(a))
    assert seen == [(0, 3), (2, 3), (3, 3)]
    seen.clear()
    cache.get_or_compute(keys, lambda i: images[i], embed, 2, progress=lambda *a: seen.append(a))
    assert seen == []
