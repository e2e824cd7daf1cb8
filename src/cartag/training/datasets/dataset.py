"""Training data: the vcr-train labels, the held-out split rule, image loaders and keys.

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
    """Opens ``samples[i]`` as an RGB image (for
    :meth:`~cartag.training.datasets.embedding_cache.EmbeddingCache.get_or_compute`)."""

    def load(i: int) -> Image.Image:
        with Image.open(samples[i].file) as image:
            return image.convert("RGB")

    return load


def file_loader(files: Sequence[Path]) -> Callable[[int], Image.Image]:
    """Opens ``files[i]`` as an RGB image."""

    def load(i: int) -> Image.Image:
        with Image.open(files[i]) as image:
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
