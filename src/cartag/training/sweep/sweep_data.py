"""A frozen dataset version as arrays, with its embeddings and color features cached.

Rows are the version's ``included`` items (excluded and flagged ones are never
trained on nor scored). Embeddings live in the store's embeddings table, keyed by
image content and backbone id (the embedding cache of
:mod:`cartag.training.datasets.embedding_cache` with its store storage), so the
service's cached embeddings are reused and a sweep that stops half-way keeps what it
computed. Color features
(:mod:`cartag.models.color_features`) and horizontally flipped embeddings (the
``flip`` augmentation) are cached in the same table under their own ids.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

import numpy as np
from PIL import Image, ImageOps

from cartag.clock import Clock
from cartag.errors import ConflictError, InputError
from cartag.imaging.decode import decode_image
from cartag.models.backbone import Backbone, BackboneSpec, to_rgb
from cartag.models.classifier import draft_size_for
from cartag.models.color_features import FEATURE_ID, color_features_batch
from cartag.settings import Settings
from cartag.store import datasets
from cartag.store.blobs import BlobStore
from cartag.store.db import Database
from cartag.training.datasets.embedding_cache import EmbeddingCache, StoreStorage
from cartag.training.heads.recolor import Recolored, missing_targets, synthesize
from cartag.vocab import COLORS, IMAGE_TYPES

COLOR_FEATURES_ID: Final[str] = f"color-features:{FEATURE_ID}"
FLIP_SUFFIX: Final[str] = "+hflip"
PLACEHOLDER: Final[int] = IMAGE_TYPES.index("Placeholder")
_BATCH: Final[int] = 16

# (stage, done, total): e.g. ("embeddings efficientnet-lite0", 32, 2883)
Progress = Callable[[str, int, int], None]


@dataclass
class DatasetView:
    """The included items of a frozen version, in content-hash order.

    Attributes:
        ref: ``NAME@N``.
        manifest_sha256: The frozen manifest's hash.
        shas: N content hashes.
        blob_paths: N blob paths.
        type_idx: int64 (N,) index into IMAGE_TYPES, -1 = no type label.
        color_idx: int64 (N,) index into COLORS, -1 = no color label.
        splits: N split names (``train``, ``test``, ``test:advertiser=42``; "" = none).
        groups: N split groups (near-duplicates/same listing), the hash when absent.
        test_sets: Set name (``REF:test``, ``REF:test:advertiser=42``) -> row indices.
    """

    ref: str
    manifest_sha256: str
    shas: list[str]
    blob_paths: list[str]
    type_idx: np.ndarray
    color_idx: np.ndarray
    splits: list[str]
    groups: list[str]
    test_sets: dict[str, np.ndarray] = field(default_factory=dict)

    @property
    def train(self) -> np.ndarray:
        """Row indices of the train split."""
        return np.flatnonzero(np.asarray([s == "train" for s in self.splits], dtype=bool))

    @property
    def tested(self) -> np.ndarray:
        """Row indices of every test set, each once (where a candidate's drift reference
        measures its novelty quantiles)."""
        if not self.test_sets:
            return np.zeros(0, dtype=np.int64)
        return np.unique(np.concatenate(list(self.test_sets.values()))).astype(np.int64)

    def validation_mask(self, fraction: float, seed: int) -> np.ndarray:
        """bool (N,): train rows whose group hashes into the validation fold.

        Whole groups go to one side, so a near-duplicate never scores its twin.
        """
        mask = np.zeros(len(self.shas), dtype=bool)
        for i in self.train:
            digest = hashlib.sha256(f"cartag-val-v1:{seed}:{self.groups[i]}".encode()).digest()
            mask[i] = int.from_bytes(digest[:8], "big") / 2**64 < fraction
        return mask


def load_view(db: Database, ref: str) -> DatasetView:
    """Read a frozen version's included items.

    Raises:
        NotFoundError: No such version.
        ConflictError: The version is still a draft.
        InputError: It has no labelled train items or no test items.
    """
    with db.read() as session:
        version = datasets.get_version(session, ref)
        if version.status != datasets.FROZEN or not version.manifest_sha256:
            raise ConflictError(
                f"dataset version {version.ref} is a draft; review it and freeze it "
                f"(cartag dataset freeze {version.ref}) before training on it"
            )
        rows = datasets.list_items(session, version.ref, status=datasets.INCLUDED, order="content")
        ref, manifest = version.ref, version.manifest_sha256
    type_idx = [
        IMAGE_TYPES.index(r.image_type) if r.image_type in IMAGE_TYPES else -1 for r in rows
    ]
    color_idx = [COLORS.index(r.color) if r.color in COLORS else -1 for r in rows]
    view = DatasetView(
        ref=ref,
        manifest_sha256=manifest,
        shas=[r.content_sha256 for r in rows],
        blob_paths=[r.blob_path for r in rows],
        type_idx=np.asarray(type_idx, dtype=np.int64),
        color_idx=np.asarray(color_idx, dtype=np.int64),
        splits=[r.split or "" for r in rows],
        groups=[r.group_key or r.content_sha256 for r in rows],
    )
    for split in sorted({s for s in view.splits if s == "test" or s.startswith("test:")}):
        view.test_sets[f"{ref}:{split}"] = np.flatnonzero(
            np.asarray([s == split for s in view.splits], dtype=bool)
        )
    labelled = (view.type_idx >= 0) | (view.color_idx >= 0)
    if not labelled[view.train].any():
        raise InputError(f"{ref} has no labelled, included items in its train split", "dataset")
    if not view.test_sets:
        # Splits are made by the build, per (type, color) stratum and listing group: a
        # version this small put every group in train.
        raise InputError(
            f"{ref} has no test split: its builds put every group in train (too few images "
            "or listing groups per type and color). Build a new version with more images, "
            "or name an advertiser's images as a test set (cartag dataset create --from "
            f"{ref.split('@')[0]} --test-set advertiser=ID), and train on that one",
            "dataset",
        )
    return view


def check_type_classes(view: DatasetView) -> None:
    """Refuse a view whose train split lacks an image type the service can answer.

    A candidate trained without one of :data:`IMAGE_TYPES` can never predict it,
    and when the test sets lack it too the promotion gates cannot see the loss
    (a photo folder such as vcr-train has no Placeholder images at all).

    Raises:
        InputError: Some image type has no training example; the message names it and
            says how to add generated placeholder cards.
    """
    train = view.type_idx[view.train]
    counts = np.bincount(train[train >= 0], minlength=len(IMAGE_TYPES))
    missing = [name for name, n in zip(IMAGE_TYPES, counts, strict=True) if n == 0]
    if not missing:
        return
    name = view.ref.rsplit("@", 1)[0]
    hints = []
    if "Placeholder" in missing:
        hints.append(
            f"add generated cards: cartag dataset create {name} --from {view.ref} "
            "--placeholders 200"
        )
    others = [m for m in missing if m != "Placeholder"]
    if others:
        hints.append(
            f"label images as {', '.join(others)} (a labels CSV with image_type, fixes, review)"
        )
    raise InputError(
        f"{view.ref} has no training examples of image type {', '.join(missing)}: every "
        f"candidate would lose {'that class' if len(missing) == 1 else 'those classes'}; "
        + "; ".join(hints)
        + "; then freeze the new version and train on it",
        "dataset",
    )


def check_training_rows(view: DatasetView, validation: np.ndarray, fraction: float) -> None:
    """Refuse a view whose heads cannot be fitted: both need labels in both fits.

    Each trial fits the type head and the color head on the train split minus the
    validation fold, then on the whole train split (:func:`~cartag.training.sweep.candidates.
    train_candidate`); a split without color labels on photos (a type-only folder such
    as type-train) or a fold that takes all of them stopped the first trial with a
    ValueError traceback.

    Args:
        view: The dataset.
        validation: bool (N,) validation fold (train rows only).
        fraction: The sweep's ``validation_fraction``, for the message.

    Raises:
        InputError: Naming what is missing and what to do.
    """
    train = view.train
    colored = (view.color_idx >= 0) & (view.type_idx != PLACEHOLDER)
    if not colored[train].any():
        raise InputError(
            f"{view.ref} has no color labels on its train split's photos: every candidate "
            "has a color head to fit; label colors (a labels CSV with a color column, color "
            "folder names, fixes, review), then freeze the new version and train on it",
            "dataset",
        )
    inner = train[~validation[train]]
    for what, rows in (
        ("image-type", inner[view.type_idx[inner] >= 0]),
        ("color", inner[colored[inner]]),
    ):
        if not len(rows):
            raise InputError(
                f"the validation fold (validation_fraction {fraction:g}, whole groups) holds "
                f"every {what}-labelled train image of {view.ref}, so no head can be fitted "
                "without it: lower validation_fraction in the sweep file, or add labelled "
                "images",
                "validation_fraction",
            )


@dataclass
class RecoloredRows:
    """Recolored copies of training photos, for colors the train split has no photo of
    (:mod:`cartag.training.heads.recolor`).

    Attributes:
        source: int64 (M,) the view row each copy was made from (a head fitted on
            some rows uses only the copies of those rows).
        emb: float32 (M, D) embeddings.
        color: float32 (M, F) color features.
        color_idx: int64 (M,) index into COLORS.
    """

    source: np.ndarray
    emb: np.ndarray
    color: np.ndarray
    color_idx: np.ndarray


@dataclass
class Features:
    """Model inputs of every row of a view.

    Attributes:
        backbone_id: Which backbone made ``emb``.
        emb: float32 (N, D) embeddings.
        color: float32 (N, F) color features.
        flipped: float32 (N, D) embeddings of the mirrored images, or None.
        recolored: Recolored training copies, or None when none were made.
    """

    backbone_id: str
    emb: np.ndarray
    color: np.ndarray
    flipped: np.ndarray | None = None
    recolored: RecoloredRows | None = None


class FeatureSource:
    """Computes missing embeddings/features of a view's images and caches them in the store.

    Args:
        db: The store (embeddings table).
        blobs: Where the images are.
        settings: ``engine`` and ``data_dir`` (ONNX export cache) of the backbone.
        clock: Timestamps of cached rows.
        threads: Backbone threads (the CPU share of training); 0 = leave torch's setting.
        progress: Called as batches are computed.
    """

    def __init__(
        self,
        db: Database,
        blobs: BlobStore,
        settings: Settings,
        clock: Clock,
        *,
        threads: int = 0,
        progress: Progress | None = None,
    ) -> None:
        self.db = db
        self.blobs = blobs
        self.settings = settings
        self.clock = clock
        self.threads = threads
        self.progress = progress
        self._backbones: dict[tuple[BackboneSpec, Path | None], Backbone] = {}
        # Recolored copies depend on the view, count and seed, not on the backbone:
        # made and color-featured once, embedded once per backbone.
        self._made: dict[tuple[str, int, int], tuple[np.ndarray, list[Recolored], np.ndarray]] = {}

    def backbone(self, spec: BackboneSpec, quantization: Path | None = None) -> Backbone:
        """The loaded backbone of ``spec`` (a variant, fine-tuned or not), loaded once.

        Args:
            spec: The network.
            quantization: A ``quantization.json``: the network quantized to int8 with
                those ranges (on the onnx engine, whatever ``settings.engine`` says).
        """
        key = (spec, quantization)
        if key not in self._backbones:
            self._backbones[key] = Backbone.load(
                spec.variant,
                threads=self.threads,
                engine="onnx" if quantization is not None else self.settings.engine,
                cache_dir=self.settings.resolved_cache_dir,
                weights=spec.weights,
                quantization=quantization,
            )
        return self._backbones[key]

    def features(
        self,
        view: DatasetView,
        spec: BackboneSpec,
        *,
        flipped: bool = False,
        recolored_per_color: int = 0,
        seed: int = 0,
        quantization: Path | None = None,
    ) -> Features:
        """Embeddings (and color features, flipped embeddings) of every row of ``view``.

        With ``recolored_per_color``, also that many recolored copies of train-split
        photos for each color of :data:`cartag.training.heads.recolor.TARGETS` that the
        train split has no photo of (made afresh with ``seed``, not cached: a few seconds).
        With ``quantization``, the embeddings of the int8 backbone of those ranges
        (cached under its own id, as the service caches what it serves).
        """
        backbone = self.backbone(spec, quantization)
        variant = spec.variant if quantization is None else f"{spec.variant} int8"
        # The serving model's decode: these vectors share the service's cache rows.
        draft = draft_size_for(backbone.input_size)
        emb = self._cached(
            view, backbone.backbone_id, f"embeddings {variant}", backbone.embed_images, draft
        )
        color = self._cached(view, COLOR_FEATURES_ID, "color features", color_features_batch)
        mirrored = None
        if flipped:

            def embed_mirrored(images: Sequence[Image.Image]) -> np.ndarray:
                return backbone.embed_images([ImageOps.mirror(to_rgb(im)) for im in images])

            mirrored = self._cached(
                view,
                backbone.backbone_id + FLIP_SUFFIX,
                f"flipped embeddings {variant}",
                embed_mirrored,
                draft,
            )
        recolored = self._recolored(view, backbone, recolored_per_color, seed)
        return Features(backbone.backbone_id, emb, color, mirrored, recolored)

    def _recolored(
        self, view: DatasetView, backbone: Backbone, per_color: int, seed: int
    ) -> RecoloredRows | None:
        if per_color <= 0:
            return None
        key = (view.manifest_sha256, per_color, seed)
        if key not in self._made:
            rows = view.train
            rows = rows[(view.color_idx[rows] >= 0) & (view.type_idx[rows] != PLACEHOLDER)]
            colors = [COLORS[i] for i in view.color_idx[rows]]
            made = synthesize(
                colors,
                lambda i: self.image(view.blob_paths[rows[i]]),
                per_color,
                seed=seed,
                targets=missing_targets(colors),
            )
            features = color_features_batch([r.image for r in made]) if made else np.empty(0)
            self._made[key] = (rows, made, features)
        rows, made, color = self._made[key]
        if not made:
            return None
        if self.progress:
            self.progress("recolored photos", 0, len(made))
        images = [r.image for r in made]
        emb = np.concatenate(
            [backbone.embed_images(images[i : i + _BATCH]) for i in range(0, len(images), _BATCH)]
        )
        if self.progress:
            self.progress("recolored photos", len(made), len(made))
        return RecoloredRows(
            source=np.asarray([rows[r.source] for r in made], dtype=np.int64),
            emb=emb.astype(np.float32),
            color=color,
            color_idx=np.asarray([COLORS.index(r.color) for r in made], dtype=np.int64),
        )

    def _cached(
        self,
        view: DatasetView,
        key: str,
        stage: str,
        compute: Callable[[Sequence[Image.Image]], np.ndarray],
        draft: int | None = None,
    ) -> np.ndarray:
        cache = EmbeddingCache(StoreStorage(self.db, key, self.clock))
        progress = self.progress

        def report(done: int, total: int) -> None:
            if progress:
                progress(stage, done, total)

        return cache.get_or_compute(
            view.shas,
            lambda i: self.image(view.blob_paths[i], draft),
            compute,
            _BATCH,
            progress=report,
        )

    def image(self, path: str, draft: int | None = None) -> Image.Image:
        """The blob decoded as the service decodes (EXIF, draft-mode shrink, RGB on white).

        ``draft``: the JPEG draft size; a backbone's embeddings are keyed like the
        service's, so they must be decoded at the service's (``draft_size_for``) to be
        the vectors it computes and caches for these bytes. None: the default (320),
        for what is cached under training's own ids (color features).
        """
        local: Path | None = self.blobs.local_path(path)
        data = local.read_bytes() if local is not None else self.blobs.get(path)
        return decode_image(data, max_pixels=self.settings.max_image_pixels, draft_size=draft).image
