"""The bundled model's corpus: labelled photos and generated placeholders, embedded once.

:func:`build_corpus` reads one vcr-train folder (the original build);
:func:`build_corpus_all` reads the reviewed table of several sources
(:mod:`cartag.training.datasets.sources`) with the per-source held-out split
(:mod:`cartag.training.datasets.all_sources`). Embeddings go through the embedding
cache (:mod:`cartag.training.datasets.embedding_cache`), keyed by image content,
backbone and preprocessing.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Final, Protocol

import numpy as np
from PIL import Image

from cartag.imaging.keys import phash
from cartag.imaging.placeholders import generate_placeholders
from cartag.models.backbone import PREPROCESS_ID, Backbone
from cartag.training.datasets import all_sources
from cartag.training.datasets.dataset import (
    data_hash,
    file_loader,
    holdout_mask,
    image_key,
    read_labels,
    sample_loader,
)
from cartag.training.datasets.embedding_cache import EmbeddingCache
from cartag.training.datasets.sources import TYPE_TRAIN, read_sources
from cartag.training.datasets.type_labels import TYPE_LABELS_PATH
from cartag.vocab import COLORS, IMAGE_TYPES

PLACEHOLDER_SOURCE: Final[str] = "placeholder"


@dataclass
class Corpus:
    """Everything embedded once.

    Attributes:
        keys: N split keys (labels.csv path or placeholder id).
        strata: N split strata (color or placeholder family).
        emb: float32 (N, D) embeddings.
        type_idx: (N,) index into IMAGE_TYPES, -1 where unknown.
        color_idx: (N,) index into COLORS, -1 for placeholders.
        family: N placeholder families ("" for real photos).
        holdout: bool (N,).
        data_hash: SHA-256 of labels + image content.
        sources: N source names (``vcr``, ``vcor``, ``type-train``, ``placeholder``);
            empty for the single-folder corpus of :func:`build_corpus`.
        files: N image files (None for placeholders); empty for :func:`build_corpus`.
        content: N content keys (file SHA-256, placeholder image key); likewise.
        hashes: pHashes of the real rows in corpus order; likewise.
        cv_groups: N type-head CV group labels (``repo:<repository>`` for type-train,
            ``family:<design family>`` for placeholders, ``""`` else); likewise.
    """

    keys: list[str]
    strata: list[str]
    emb: np.ndarray
    type_idx: np.ndarray
    color_idx: np.ndarray
    family: list[str]
    holdout: np.ndarray
    data_hash: str
    sources: list[str] = field(default_factory=list)
    files: list[Path | None] = field(default_factory=list)
    content: list[str] = field(default_factory=list)
    hashes: list[str] = field(default_factory=list)
    cv_groups: list[str] = field(default_factory=list)


def build_corpus(
    data_dir: Path, backbone: Backbone, cache_dir: Path, n_placeholders: int, seed: int
) -> Corpus:
    """Read labels, generate placeholders, embed everything (through the cache)."""
    samples = read_labels(data_dir)
    if not samples:
        raise ValueError(
            f"{data_dir / 'labels.csv'} lists no photos: pass the vcr-train folder, or the "
            "data root with --sources"
        )
    placeholders = generate_placeholders(n_placeholders, seed=seed)
    cache = EmbeddingCache.in_folder(cache_dir, backbone.backbone_id, PREPROCESS_ID)

    real_emb = cache.get_or_compute(
        [s.sha256 for s in samples], sample_loader(samples), lambda ims: backbone.embed_images(ims)
    )
    ph_keys = [image_key(p.image) for p in placeholders]
    ph_emb = cache.get_or_compute(
        ph_keys, lambda i: placeholders[i].image, lambda ims: backbone.embed_images(ims)
    )
    keys = [s.path for s in samples] + [p.id for p in placeholders]
    strata = [s.color for s in samples] + [p.family for p in placeholders]
    unknown = -1
    type_idx = [IMAGE_TYPES.index(s.weak_type) if s.weak_type else unknown for s in samples]
    type_idx += [IMAGE_TYPES.index("Placeholder")] * len(placeholders)
    color_idx = [COLORS.index(s.color) for s in samples] + [unknown] * len(placeholders)
    lines = [f"{s.path}\t{s.color}\t{s.weak_type or ''}\t{s.sha256}" for s in samples]
    lines += [f"{p.id}\t{p.family}\t{k}" for p, k in zip(placeholders, ph_keys, strict=True)]
    return Corpus(
        keys=keys,
        strata=strata,
        emb=np.concatenate([real_emb, ph_emb]),
        type_idx=np.asarray(type_idx, dtype=np.int64),
        color_idx=np.asarray(color_idx, dtype=np.int64),
        family=[""] * len(samples) + [p.family for p in placeholders],
        holdout=holdout_mask(keys, strata),
        data_hash=data_hash(lines),
    )


class Embedder(Protocol):
    """What :func:`build_corpus_all` needs of a :class:`~cartag.models.backbone.Backbone`."""

    @property
    def backbone_id(self) -> str: ...

    def embed_images(self, images: list[Image.Image]) -> np.ndarray: ...


def build_corpus_all(
    data_root: Path,
    sources: Sequence[str],
    backbone: Embedder,
    cache_dir: Path,
    n_placeholders: int,
    seed: int,
    type_labels: Path = TYPE_LABELS_PATH,
) -> Corpus:
    """The reviewed table of ``sources`` (:func:`cartag.training.datasets.sources.read_sources`)
    and the generated placeholders, embedded, with the per-source held-out split
    (:mod:`cartag.training.datasets.all_sources`).

    Raises:
        FileNotFoundError: A requested source has no labels.csv under ``data_root``.
    """
    rows = [r for r in read_sources(data_root, type_labels) if r.source in sources]
    missing = sorted(set(sources) - {r.source for r in rows})
    if missing:
        raise FileNotFoundError(f"no labels.csv for {', '.join(missing)} in {data_root}")
    files = [data_root / r.path for r in rows]
    content = [hashlib.sha256(f.read_bytes()).hexdigest() for f in files]
    hashes = [phash(file_loader(files)(i)) for i in range(len(files))]
    fold = all_sources.type_train_folds(rows, hashes)
    held = all_sources.source_holdout(rows, fold)
    placeholders = generate_placeholders(n_placeholders, seed=seed)
    cache = EmbeddingCache.in_folder(cache_dir, backbone.backbone_id, PREPROCESS_ID)
    real_emb = cache.get_or_compute(content, file_loader(files), backbone.embed_images)
    ph_keys = [image_key(p.image) for p in placeholders]
    ph_emb = cache.get_or_compute(
        ph_keys, lambda i: placeholders[i].image, lambda ims: backbone.embed_images(ims)
    )
    ph_ids = [p.id for p in placeholders]
    ph_family = [p.family for p in placeholders]
    type_idx = [IMAGE_TYPES.index(r.image_type) if r.image_type else -1 for r in rows]
    type_idx += [IMAGE_TYPES.index("Placeholder")] * len(placeholders)
    color_idx = [COLORS.index(r.color) if r.color else -1 for r in rows]
    color_idx += [-1] * len(placeholders)
    lines = [
        f"{r.source}\t{r.path}\t{r.image_type or ''}\t{r.color or ''}\t{c}"
        for r, c in zip(rows, content, strict=True)
    ]
    lines += [f"{p.id}\t{p.family}\t{k}" for p, k in zip(placeholders, ph_keys, strict=True)]
    return Corpus(
        keys=[r.path for r in rows] + ph_ids,
        strata=[all_sources.folder(r.path) or r.group for r in rows] + ph_family,
        emb=np.concatenate([real_emb, ph_emb]),
        type_idx=np.asarray(type_idx, dtype=np.int64),
        color_idx=np.asarray(color_idx, dtype=np.int64),
        family=[""] * len(rows) + ph_family,
        holdout=np.concatenate([held, holdout_mask(ph_ids, ph_family)]),
        data_hash=data_hash(lines),
        sources=[r.source for r in rows] + [PLACEHOLDER_SOURCE] * len(placeholders),
        files=[*files, *([None] * len(placeholders))],
        content=content + ph_keys,
        hashes=hashes,
        cv_groups=[f"repo:{r.group}" if r.source == TYPE_TRAIN else "" for r in rows]
        + [f"family:{f}" for f in ph_family],
    )


def reembed(corpus: Corpus, backbone: Embedder, cache_dir: Path, seed: int) -> Corpus:
    """The same corpus, embedded by another backbone (the int8 one), through its cache.

    Args:
        corpus: A corpus of several sources (:func:`build_corpus_all`).
        backbone: The other backbone.
        cache_dir: Embedding cache folder (keyed by ``backbone.backbone_id``).
        seed: The seed the corpus' placeholders were generated with.

    Returns:
        ``corpus`` with ``emb`` replaced.
    """
    n_placeholders = sum(1 for f in corpus.files if f is None)
    placeholders = generate_placeholders(n_placeholders, seed=seed)
    first = len(corpus.files) - n_placeholders

    def load(i: int) -> Image.Image:
        path = corpus.files[i]
        return placeholders[i - first].image if path is None else file_loader([path])(0)

    cache = EmbeddingCache.in_folder(cache_dir, backbone.backbone_id, PREPROCESS_ID)
    emb = cache.get_or_compute(corpus.content, load, backbone.embed_images)
    return replace(corpus, emb=emb)
