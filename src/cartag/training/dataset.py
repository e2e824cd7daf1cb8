"""Training data: the vcr-train labels, the held-out split rule, and an embedding cache.

The split rule is part of the model card; later models must keep it so their
held-out numbers stay comparable:

    stratum = the color folder of the path (for placeholders: the design family);
    within a stratum, sort by ``sha256("cartag-split-v1:" + key)`` and hold out the
    first ``round(0.2 * n)``; ``key`` is the labels.csv path (``vcr-train/Red/x.jpg``)
    or the placeholder id (``placeholder/<seed>/<index>``).
"""

from __future__ import annotations

import csv
import hashlib
import re
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import numpy as np
from PIL import Image

SPLIT_SALT: Final[str] = "cartag-split-v1:"
HOLDOUT_FRACTION: Final[float] = 0.2
SPLIT_RULE: Final[str] = (
    "stratum = color folder of the path (placeholders: design family); within a stratum, "
    f"sort keys by sha256('{SPLIT_SALT}' + key) and hold out the first "
    f"round({HOLDOUT_FRACTION} * n); key = labels.csv path or placeholder id"
)


@dataclass(frozen=True)
class Sample:
    """One row of labels.csv.

    Attributes:
        path: Path as written in labels.csv (``vcr-train/<Color>/<file>.jpg``).
        file: Absolute path of the image.
        color: Color label (vocabulary spelling).
        weak_type: ``Dealer``, ``Stock`` or None (the rule abstained).
        sha256: SHA-256 of the file bytes.
    """

    path: str
    file: Path
    color: str
    weak_type: str | None
    sha256: str


def read_labels(data_dir: Path) -> list[Sample]:
    """Read ``<data_dir>/labels.csv``; paths in it are relative to ``data_dir.parent``.

    Args:
        data_dir: The vcr-train folder.

    Returns:
        Samples in file order.
    """
    samples = []
    with (data_dir / "labels.csv").open(newline="", encoding="utf-8") as fh:
        for row in csv.DictReader(fh):
            file = data_dir.parent / row["path"]
            samples.append(
                Sample(
                    path=row["path"],
                    file=file,
                    color=row["color"],
                    weak_type=row["weak_type"] or None,
                    sha256=hashlib.sha256(file.read_bytes()).hexdigest(),
                )
            )
    return samples


def sample_loader(samples: Sequence[Sample]) -> Callable[[int], Image.Image]:
    """Opens ``samples[i]`` as an RGB image (for :meth:`EmbeddingCache.get_or_compute`)."""

    def load(i: int) -> Image.Image:
        with Image.open(samples[i].file) as image:
            return image.convert("RGB")

    return load


def split_key(key: str) -> str:
    """The hex digest that orders ``key`` within its stratum."""
    return hashlib.sha256((SPLIT_SALT + key).encode()).hexdigest()


def holdout_mask(keys: Sequence[str], strata: Sequence[str]) -> np.ndarray:
    """Apply the split rule (module docstring).

    Args:
        keys: N stable identifiers.
        strata: N stratum names.

    Returns:
        bool (N,): True for held-out rows.
    """
    groups: dict[str, list[int]] = defaultdict(list)
    for i, stratum in enumerate(strata):
        groups[stratum].append(i)
    mask = np.zeros(len(keys), dtype=bool)
    for members in groups.values():
        ordered = sorted(members, key=lambda i: split_key(keys[i]))
        mask[ordered[: round(HOLDOUT_FRACTION * len(members))]] = True
    return mask


def data_hash(lines: Iterable[str]) -> str:
    """SHA-256 of sorted, newline-joined description lines (labels + content hashes)."""
    return hashlib.sha256("\n".join(sorted(lines)).encode()).hexdigest()


def image_key(image: Image.Image) -> str:
    """Content key of an in-memory image (mode, size and pixels)."""
    digest = hashlib.sha256(f"{image.mode}:{image.size}".encode())
    digest.update(image.tobytes())
    return digest.hexdigest()


class EmbeddingCache:
    """Embeddings keyed by content hash, in one ``.npz`` per backbone + preprocessing.

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

    def get_or_compute(
        self,
        keys: Sequence[str],
        load: Callable[[int], Image.Image],
        embed: Callable[[list[Image.Image]], np.ndarray],
        batch_size: int = 32,
    ) -> np.ndarray:
        """Return embeddings for ``keys``, computing and saving the missing ones.

        Args:
            keys: N content keys.
            load: Returns the image for row ``i`` (called only on cache misses).
            embed: Maps a list of images to (B, D) embeddings.
            batch_size: Images per ``embed`` call.

        Returns:
            float32 (N, D).
        """
        missing = [i for i, key in enumerate(keys) if key not in self._table]
        for start in range(0, len(missing), batch_size):
            rows = missing[start : start + batch_size]
            for i, vector in zip(rows, embed([load(i) for i in rows]), strict=True):
                self._table[keys[i]] = vector.astype(np.float32)
        if missing:
            self._save()
        return np.stack([self._table[key] for key in keys]).astype(np.float32)

    def _save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        keys = sorted(self._table)
        tmp = self.path.with_suffix(".tmp.npz")
        np.savez(
            tmp, keys=np.asarray(keys, dtype=np.str_), emb=np.stack([self._table[k] for k in keys])
        )
        tmp.replace(self.path)
