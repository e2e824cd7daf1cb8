"""The embedding cache of training: vectors keyed by image content, computed once.

One loop (:meth:`EmbeddingCache.get_or_compute`) finds the cached vectors of some
keys, computes the missing ones in batches and stores them; where they are stored is
a :class:`CacheStorage`:

- :class:`NpzStorage`: one ``embeddings-<backbone>-<preprocessing>.npz`` file in a
  folder (arrays ``keys`` and ``emb``), rewritten once a call's misses are computed:
  the bundled build, the fine-tuning benchmarks;
- :class:`StoreStorage`: the store's embeddings table under one id (the service's
  cached embeddings are reused), written batch by batch so that a sweep that stops
  half-way keeps what it computed (:mod:`cartag.training.sweep.sweep_data`).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Protocol

import numpy as np
from PIL import Image

from cartag.clock import Clock
from cartag.store.db import Database
from cartag.store.embeddings import load_embeddings, save_embeddings

# (done, total) of the missing vectors, reported before the first batch and after each.
CacheProgress = Callable[[int, int], None]


class CacheStorage(Protocol):
    """Where an :class:`EmbeddingCache` keeps its vectors."""

    def load(self, keys: Sequence[str]) -> dict[str, np.ndarray]:
        """The stored vectors of ``keys`` (missing ones absent)."""
        ...

    def save(self, vectors: Mapping[str, np.ndarray]) -> None:
        """Keep one computed batch."""
        ...

    def flush(self) -> None:
        """Called once after the last batch of a call that computed something."""
        ...


class NpzStorage:
    """Vectors in one ``.npz`` per backbone + preprocessing, loaded whole when opened.

    Args:
        cache_dir: Folder for the cache files.
        backbone_id: Identifies the weights.
        preprocess_id: Identifies the preprocessing.
    """

    def __init__(self, cache_dir: Path, backbone_id: str, preprocess_id: str) -> None:
        safe = re.sub(r"[^A-Za-z0-9._-]+", "_", f"{backbone_id}-{preprocess_id}")
        self.path = cache_dir / f"embeddings-{safe}.npz"
        self._table: dict[str, np.ndarray] = {}
        if self.path.is_file():
            with self.path.open("rb") as fh, np.load(fh, allow_pickle=False) as data:
                self._table = dict(zip(data["keys"].tolist(), data["emb"], strict=True))

    def load(self, keys: Sequence[str]) -> dict[str, np.ndarray]:
        """The vectors of ``keys`` held in the file."""
        return {key: self._table[key] for key in keys if key in self._table}

    def save(self, vectors: Mapping[str, np.ndarray]) -> None:
        """Keep a batch in memory (written by :meth:`flush`)."""
        self._table.update(vectors)

    def flush(self) -> None:
        """Rewrite the file (atomically) with every vector held."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        keys = sorted(self._table)
        tmp = self.path.with_suffix(".tmp.npz")
        np.savez(
            tmp, keys=np.asarray(keys, dtype=np.str_), emb=np.stack([self._table[k] for k in keys])
        )
        tmp.replace(self.path)


class StoreStorage:
    """Vectors in the store's embeddings table under one id, keyed by content SHA-256.

    The table keeps float16: a vector read back differs from the one computed in the
    same call by that rounding.

    Args:
        db: The store.
        embedding_id: The rows' ``backbone_id`` (a backbone id, or the id of color
            features or flipped embeddings).
        clock: Timestamps of new rows.
    """

    def __init__(self, db: Database, embedding_id: str, clock: Clock) -> None:
        self.db = db
        self.embedding_id = embedding_id
        self.clock = clock

    def load(self, keys: Sequence[str]) -> dict[str, np.ndarray]:
        """The stored vectors of ``keys``."""
        with self.db.read() as session:
            return load_embeddings(session, self.embedding_id, keys)

    def save(self, vectors: Mapping[str, np.ndarray]) -> None:
        """Write a batch now (existing rows are kept)."""
        with self.db.write() as session:
            save_embeddings(session, self.embedding_id, vectors, self.clock.now())

    def flush(self) -> None:
        """Nothing to do: every batch is written by :meth:`save`."""


class EmbeddingCache:
    """Vectors keyed by content (file SHA-256 or :func:`~.dataset.image_key`), computed once.

    Args:
        storage: Where the vectors are kept.
    """

    def __init__(self, storage: CacheStorage) -> None:
        self.storage = storage

    @classmethod
    def in_folder(cls, cache_dir: Path, backbone_id: str, preprocess_id: str) -> EmbeddingCache:
        """A cache in ``cache_dir``'s ``.npz`` file of ``backbone_id`` + ``preprocess_id``."""
        return cls(NpzStorage(cache_dir, backbone_id, preprocess_id))

    def get_or_compute(
        self,
        keys: Sequence[str],
        load: Callable[[int], Image.Image],
        embed: Callable[[list[Image.Image]], np.ndarray],
        batch_size: int = 32,
        *,
        progress: CacheProgress | None = None,
    ) -> np.ndarray:
        """Return vectors for ``keys``, computing and storing the missing ones.

        Args:
            keys: N content keys.
            load: Returns the image for row ``i`` (called only on cache misses).
            embed: Maps a list of images to (B, D) vectors.
            batch_size: Images per ``embed`` call.
            progress: Told ``(done, total)`` of the missing vectors as batches finish.

        Returns:
            float32 (N, D).
        """
        found = self.storage.load(keys)
        missing = [i for i, key in enumerate(keys) if key not in found]
        total = len(missing)
        if progress and total:
            progress(0, total)
        for start in range(0, total, batch_size):
            rows = missing[start : start + batch_size]
            vectors = embed([load(i) for i in rows])
            batch = {
                keys[i]: np.asarray(v, dtype=np.float32) for i, v in zip(rows, vectors, strict=True)
            }
            self.storage.save(batch)
            found.update(batch)
            if progress:
                progress(min(start + batch_size, total), total)
        if missing:
            self.storage.flush()
        return np.stack([found[key] for key in keys]).astype(np.float32)
