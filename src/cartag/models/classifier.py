"""The classifier interface the service uses, and its backbone + heads implementation.

A model directory holds ``config.json`` and one head per task (``.npz`` +
``.json``, see :mod:`cartag.models.heads`)::

    config.json        {"format": "cartag-model/1", "version": ..., "backbone": {...},
                        "heads": {"image_type": "type_head", "color": "color_head"},
                        "color_features": "vehicle-lab-v1"}
    type_head.npz/json
    color_head.npz/json
    backbone.npz/json  only with "backbone": {"weights": "backbone.npz", ...}: fine-tuned
                       network weights (cartag.training.bundled.finetune); without it the
                       variant's pip package supplies the ImageNet weights
    quantization.json  only with "int8": {"quantization": "quantization.json",
                       "backbone_id": ..., "heads": {...}}: the activation ranges of the
                       int8 backbone and the heads fitted on its embeddings
                       (cartag.models.quantization), served with precision "int8"
    reference.npz      only with "reference": {"file": "reference.npz", ...}: the
                       training reference drift is measured against
                       (cartag.models.reference); without it predictions carry no novelty

With ``color_features`` set, the color head's input is the embedding followed
by :func:`cartag.models.color_features.color_features` of the image; without
it, the embedding alone (models trained before the color features existed).

The bundled model lives in ``src/cartag/models/bundled/``; ``CARTAG_MODEL_DIR``
points at another one.
"""

from __future__ import annotations

import abc
import hashlib
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, Literal

import numpy as np
from PIL import Image

from cartag.errors import ModelError
from cartag.models.backbone import PREPROCESS_ID, Backbone, BackboneSpec
from cartag.models.color_features import FEATURE_DIM, FEATURE_ID, color_features_batch
from cartag.models.engine import EngineName, InferencePlan, inference_plan, physical_cores
from cartag.models.folder import CONFIG_NAME as CONFIG_NAME
from cartag.models.folder import FIX_HINT, precision_blocks
from cartag.models.folder import MODEL_FORMAT as MODEL_FORMAT
from cartag.models.folder import WEIGHTS_NAME as WEIGHTS_NAME
from cartag.models.folder import backbone_config as backbone_config
from cartag.models.folder import backbone_spec as backbone_spec
from cartag.models.folder import copy_backbone_weights as copy_backbone_weights
from cartag.models.folder import read_config as read_config
from cartag.models.heads import LinearHead, load_head
from cartag.models.reference import DriftReference, load_reference
from cartag.models.variants import VARIANTS
from cartag.settings import Settings
from cartag.vocab import COLORS, IMAGE_TYPES

log = logging.getLogger(__name__)

# A JPEG may be draft-decoded (libjpeg's 1/2, 1/4 and 1/8 scales) until its shorter side
# would fall under this share of the network's input side S: 150 rows for S = 224, stretched
# to 224. A 1600x1200 photo then decodes at 1/8 (200x150) rather than 1/4: about 0.3 ms less
# decode and 0.4 ms less squeeze per image, 8 % of a busy server's CPU, for answers within
# 0.4 points of type macro-recall and color top-1 on every source (type recall rises by up
# to 2 points on vcr; benchmarks/draft_scale.py; RESULTS.md, "Two thirds of S"). A 1024x768
# photo keeps 1/4 (256x192): its 1/8 would leave 96 rows.
DRAFT_SHARE: Final = 2 / 3
# For a model of unknown input size: the largest input of the supported backbones.
DEFAULT_DRAFT_SIZE: Final = max(variant.input_size for variant in VARIANTS.values())


def draft_size_for(input_size: int) -> int:
    """The JPEG draft size of a network whose input is ``input_size`` square.

    What the service decodes at (:meth:`EmbeddingClassifier.draft_size`); training paths
    that write the shared embedding cache decode at it too, so that one image's cached
    vector is the same whichever path computed it first.
    """
    return math.ceil(DRAFT_SHARE * input_size)


Precision = Literal["int8", "fp32"]
BUNDLED_DIR: Final[Path] = Path(__file__).resolve().parent / "bundled"


@dataclass(frozen=True)
class Prediction:
    """The model's answer for one image.

    Attributes:
        image_type: One of ``IMAGE_TYPES``.
        type_scores: A probability for every ``IMAGE_TYPES`` entry; sums to 1.
        color: One of ``COLORS``, or None when ``image_type`` is Placeholder
            (there is no vehicle to have a color).
        color_scores: A probability for every ``COLORS`` entry; sums to 1. Kept
            for Placeholder too (useful when a reviewer overrides the type).
        confidence: ``max(type_scores.values())``.
        embedding: The backbone embedding, shape (D,) float32, when the model has
            one; the service caches it so heads can be retrained without the backbone.
        color_features: The color features appended to the embedding for the color
            head, shape (F,) float32, when the model uses them; cached like the
            embedding so a new model can re-classify without downloading the image.
        model_version: The version of the model that made this prediction; set by the
            micro-batcher, so an answer is tagged right across a hot-swap.
        novelty: Cosine distance of the embedding to the nearest centroid of the
            model's training reference (:mod:`cartag.models.reference`); None when the
            model has no reference.
    """

    image_type: str
    type_scores: dict[str, float]
    color: str | None
    color_scores: dict[str, float]
    confidence: float
    embedding: np.ndarray | None = field(default=None, compare=False, repr=False)
    color_features: np.ndarray | None = field(default=None, compare=False, repr=False)
    model_version: str | None = field(default=None, compare=False)
    novelty: float | None = field(default=None, compare=False)


class Classifier(abc.ABC):
    """What the service needs from a model. Implementations must be thread-safe.

    Attributes:
        version: Identifies the weights, stored with every result, e.g.
            ``bundled-2026.11.26-1a2b3c4d``.
    """

    version: str
    # Which backbone made Prediction.embedding (None: the model has no embeddings).
    backbone_id: str | None = None
    # Where the training data sits (None: no reference; predictions carry no novelty).
    reference: DriftReference | None = None
    # Why the int8 backbone the model folder ships and the settings asked for could not
    # be used here, fp32 serving instead (None: no such fallback).
    int8_problem: str | None = None

    @property
    def far_threshold(self) -> float | None:
        """Novelty above which an image is far from the training data (None: no reference)."""
        return None if self.reference is None else self.reference.far_threshold

    def novelty(self, embeddings: np.ndarray) -> np.ndarray | None:
        """(N,) novelty of (N, D) embeddings of this model's backbone; None without a
        reference."""
        if self.reference is None or len(embeddings) == 0:
            return None
        return self.reference.novelty(embeddings)

    def prepare(self, image: Image.Image) -> Image.Image:
        """The image as :meth:`predict` will look at it, made once per image.

        The service derives everything else it keeps of a new image (its perceptual
        hash) from this view too, so that the pixels are resized once. Predicting on
        the prepared image must give the same answer as on ``image``.

        Args:
            image: A decoded PIL image of any size and mode.

        Returns:
            ``image`` itself unless the model works at a fixed size.
        """
        return image

    def draft_size(self) -> int:
        """Shorter side a JPEG may be draft-decoded down to for this model.

        :func:`cartag.imaging.decode.decode_image`'s ``draft_size``; a model that looks at
        a fixed S x S input allows :data:`DRAFT_SHARE` of S.
        """
        return DEFAULT_DRAFT_SIZE

    def embedding_scale(self) -> tuple[np.ndarray, np.ndarray] | None:
        """The mean and std, each (D,), that standardise this model's embeddings.

        Similarities between embeddings (advertiser-aware answers) are taken in this
        space; None: the raw embeddings.
        """
        return None

    @abc.abstractmethod
    def predict(self, images: Sequence[Image.Image]) -> list[Prediction]:
        """Classify images.

        Args:
            images: Decoded PIL images of any size and mode; any number.

        Returns:
            One prediction per image, in order.
        """


def make_prediction(
    type_probs: np.ndarray,
    color_probs: np.ndarray,
    embedding: np.ndarray | None = None,
    *,
    color_features: np.ndarray | None = None,
    novelty: float | None = None,
) -> Prediction:
    """Build a :class:`Prediction` from score vectors in vocabulary order.

    Args:
        type_probs: (len(IMAGE_TYPES),) probabilities.
        color_probs: (len(COLORS),) probabilities.
        embedding: (D,) backbone embedding, kept on the prediction.
        color_features: (F,) color features the color head saw, kept on the prediction.
        novelty: The embedding's novelty against the model's reference.
    """
    type_p = np.asarray(type_probs, dtype=np.float64)
    color_p = np.asarray(color_probs, dtype=np.float64)
    # Renormalise in float64 so the scores sum to 1 to within 1e-12 after the float32 heads.
    type_p = type_p / type_p.sum()
    color_p = color_p / color_p.sum()
    type_scores = {label: float(p) for label, p in zip(IMAGE_TYPES, type_p, strict=True)}
    color_scores = {label: float(p) for label, p in zip(COLORS, color_p, strict=True)}
    image_type = IMAGE_TYPES[int(type_p.argmax())]
    color = None if image_type == "Placeholder" else COLORS[int(color_p.argmax())]
    return Prediction(
        image_type=image_type,
        type_scores=type_scores,
        color=color,
        color_scores=color_scores,
        confidence=float(type_p.max()),
        embedding=None if embedding is None else np.asarray(embedding, dtype=np.float32),
        color_features=(
            None if color_features is None else np.asarray(color_features, dtype=np.float32)
        ),
        novelty=None if novelty is None else float(novelty),
    )


class EmbeddingClassifier(Classifier):
    """A frozen :class:`Backbone` followed by type and color heads.

    Args:
        backbone: The feature extractor.
        type_head: Head whose labels are exactly ``IMAGE_TYPES``.
        color_head: Head whose labels are exactly ``COLORS``.
        version: Model version string.
        batch_size: Images per backbone call; bounds peak memory.
        color_features: Feature id (:data:`cartag.models.color_features.FEATURE_ID`)
            appended to the embedding for the color head, or None for none.
        reference: The training reference (novelty of every prediction), or None.
    """

    def __init__(
        self,
        backbone: Backbone,
        type_head: LinearHead,
        color_head: LinearHead,
        version: str,
        *,
        batch_size: int = 16,
        color_features: str | None = None,
        reference: DriftReference | None = None,
    ) -> None:
        if batch_size <= 0:
            raise ValueError("batch_size must be positive")
        if color_features not in (None, FEATURE_ID):
            raise ModelError(
                f"the color head needs color features {color_features!r}, this cartag computes "
                f"{FEATURE_ID!r}; {FIX_HINT}"
            )
        recorded = color_head.metadata.get("features", {}).get("color_features")
        if recorded not in (None, color_features):
            raise ModelError(
                f"the color head was trained with color features {recorded!r} but the model "
                f"config says {color_features!r}; {FIX_HINT}"
            )
        extra = FEATURE_DIM if color_features else 0
        for name, head, expected, width in (
            ("image_type", type_head, IMAGE_TYPES, backbone.embedding_dim),
            ("color", color_head, COLORS, backbone.embedding_dim + extra),
        ):
            if head.labels != tuple(expected):
                raise ModelError(
                    f"the {name} head has labels {list(head.labels)}, expected "
                    f"{list(expected)} in that order; retrain it; {FIX_HINT}"
                )
            if head.embedding_dim != width:
                raise ModelError(
                    f"the {name} head expects {head.embedding_dim}-d inputs but "
                    f"{backbone.backbone_id} makes {backbone.embedding_dim}-d embeddings"
                    f"{f' (+ {extra} color features)' if name == 'color' and extra else ''}; "
                    f"{FIX_HINT}"
                )
            if head.backbone_id not in (None, backbone.backbone_id):
                raise ModelError(
                    f"the {name} head was trained on {head.backbone_id} but the installed "
                    f"backbone is {backbone.backbone_id}; {FIX_HINT}"
                )
        self.backbone = backbone
        self.backbone_id = backbone.backbone_id
        self.type_head = type_head
        self.color_head = color_head
        self.version = version
        self.batch_size = batch_size
        self.color_features = color_features
        if reference is not None and not reference.serves(backbone.backbone_id):
            log.warning(
                "the drift reference is of %s embeddings, this model serves %s; "
                "serving without novelty",
                reference.embedding_id,
                backbone.backbone_id,
            )
            reference = None
        self.reference = reference

    @classmethod
    def from_dir(
        cls,
        path: Path,
        *,
        threads: int = 0,
        batch_size: int = 16,
        engine: EngineName = "torch",
        cache_dir: Path | None = None,
        backbone: Backbone | None = None,
        concurrency: int = 1,
        precision: Precision = "fp32",
    ) -> EmbeddingClassifier:
        """Load a model directory (``config.json`` + heads).

        Args:
            path: The directory.
            threads: Intra-op threads of the backbone engine (0 = its default).
            batch_size: Images per backbone call.
            engine: ``torch`` or ``onnx``; see :meth:`Backbone.load`.
            cache_dir: Model caches (the exported ONNX backbone); None = none.
            backbone: An already loaded backbone to share when it has the weights the
                config names (a hot-swap of heads then loads no network weights).
            concurrency: Backbone calls that may run at once (see :meth:`Backbone.load`).
            precision: ``int8``: the int8 backbone and heads of the folder's ``int8``
                block, when the folder has one and ``engine`` is ``onnx`` (else fp32,
                logged); if the int8 backbone cannot be made, fp32 with a warning.

        Raises:
            ModelError: If files are missing, corrupt or inconsistent.
        """
        config = read_config(path)
        backbone_cfg = config["backbone"]
        if backbone_cfg.get("preprocess", PREPROCESS_ID) != PREPROCESS_ID:
            raise ModelError(
                f"{path / CONFIG_NAME} was made with preprocessing {backbone_cfg['preprocess']!r}, "
                f"this cartag uses {PREPROCESS_ID!r}; {FIX_HINT}"
            )
        heads, wanted, quantization = precision_blocks(path, config, precision, engine)
        type_head = LinearHead.load(path / str(heads["image_type"]))
        color_head = load_head(path / str(heads["color"]))
        spec = backbone_spec(path, config)
        if backbone is None or not _same_weights(backbone, spec, wanted):
            try:
                backbone = Backbone.load(
                    spec.variant,
                    threads=threads,
                    engine=engine,
                    cache_dir=cache_dir,
                    concurrency=concurrency,
                    weights=spec.weights,
                    quantization=quantization,
                )
            except ModelError as exc:
                if quantization is None:
                    raise
                log.warning("the int8 backbone of %s cannot be used (%s); serving fp32", path, exc)
                fallback = cls.from_dir(
                    path,
                    threads=threads,
                    batch_size=batch_size,
                    engine=engine,
                    cache_dir=cache_dir,
                    backbone=backbone,
                    concurrency=concurrency,
                )
                fallback.int8_problem = str(exc)
                return fallback
        if wanted.get("backbone_id", backbone.backbone_id) != backbone.backbone_id:
            raise ModelError(
                f"{path / CONFIG_NAME} needs backbone {wanted['backbone_id']} but the "
                f"{'weights file' if spec.weights else 'installed weights'} "
                f"{'quantized with ' + str(quantization) + ' ' if quantization else ''}"
                f"are {backbone.backbone_id}; {FIX_HINT}"
            )
        if quantization is not None:
            log.info("serving the int8 backbone %s of %s", backbone.backbone_id, path)
        if not config.get("version"):
            digest = hashlib.sha256((type_head.digest() + color_head.digest()).encode())
            config["version"] = f"custom-{digest.hexdigest()[:8]}"
        version = str(config["version"])
        color_features = config.get("color_features")
        return cls(
            backbone,
            type_head,
            color_head,
            version,
            batch_size=batch_size,
            color_features=None if color_features is None else str(color_features),
            reference=load_reference(path, config),
        )

    def embedding_scale(self) -> tuple[np.ndarray, np.ndarray]:
        """The type head's feature mean and std: the space its linear head reads."""
        return self.type_head.feature_mean, self.type_head.feature_std

    def draft_size(self) -> int:
        """:data:`DRAFT_SHARE` of the network's input side, rounded up (150 for 224)."""
        return draft_size_for(self.backbone.input_size)

    def prepare(self, image: Image.Image) -> Image.Image:
        """The image squeezed to the network's input (:meth:`Backbone.fit`).

        The color evidence is measured on a 64 x 64 reduction of it, the same
        (to rounding) as of the full decoded image, at a third of the cost.
        """
        return self.backbone.fit(image)

    def predict(self, images: Sequence[Image.Image]) -> list[Prediction]:
        """Classify images in chunks of ``batch_size``.

        Args:
            images: Decoded PIL images of any size and mode.

        Returns:
            One prediction per image, in order.
        """
        predictions: list[Prediction] = []
        for start in range(0, len(images), self.batch_size):
            chunk = images[start : start + self.batch_size]
            # Preprocessing runs outside the backbone lock so threads overlap it.
            emb = self.backbone.embed(self.backbone.preprocess(chunk))
            type_probs = self.type_head.predict_proba(emb)
            color_in = emb
            features: list[np.ndarray | None] = [None] * len(chunk)
            if self.color_features:
                extra = color_features_batch(chunk)
                features = list(extra)
                color_in = np.concatenate([emb, extra], axis=1)
            color_probs = self.color_head.predict_proba(color_in)
            novelty = self.novelty(emb)
            novelties: list[float | None] = (
                [None] * len(chunk) if novelty is None else [float(n) for n in novelty]
            )
            predictions.extend(
                make_prediction(t, c, e, color_features=f, novelty=n)
                for t, c, e, f, n in zip(
                    type_probs, color_probs, emb, features, novelties, strict=True
                )
            )
        return predictions


def _same_weights(backbone: Backbone, spec: BackboneSpec, backbone_cfg: dict[str, Any]) -> bool:
    """Whether a loaded backbone is the network a config block (``backbone`` or ``int8``)
    asks for (and may be shared)."""
    if "backbone_id" in backbone_cfg:
        return bool(backbone.backbone_id == backbone_cfg["backbone_id"])
    # An old config without an id: only the package's weights of the same variant match.
    packaged = spec.weights is None and backbone.weights_path is None
    return packaged and backbone.variant == spec.variant


def settings_plan(settings: Settings) -> InferencePlan:
    """The inference plan of ``settings`` (``engine``, ``inference_workers``, ``torch_threads``):
    what the backbone is loaded with and how many batches the service runs at once.

    With several serving processes (``serve_processes``) each takes its share of the
    physical cores, so that N processes do not each run one batch per core.
    """
    workers, threads = settings.inference_workers, settings.torch_threads
    if settings.serve_processes > 1:
        share = max(1, physical_cores() // settings.serve_processes)
        workers, threads = workers or share, threads or share
    return inference_plan(settings.engine, workers, threads)


def load_classifier(settings: Settings) -> Classifier:
    """Load the configured model: ``settings.model_dir`` or the bundled one.

    Args:
        settings: Uses ``model_dir``, ``torch_threads``, ``inference_workers``,
            ``inference_batch_size``, ``engine`` and ``data_dir`` (the ONNX backbone is
            cached in ``<data_dir>/cache``).

    Raises:
        ModelError: With a how-to-fix message if the model cannot be loaded.
    """
    path = settings.model_dir if settings.model_dir is not None else BUNDLED_DIR
    if settings.model_dir is not None and not path.is_dir():
        what = "is a file, not a model folder" if path.exists() else "does not exist"
        raise ModelError(
            f"CARTAG_MODEL_DIR={path} {what}; unset it to use the bundled model "
            "or point it at a folder with config.json and the head files"
        )
    return from_settings(settings, path)


def from_settings(
    settings: Settings, folder: Path, *, backbone: Backbone | None = None
) -> EmbeddingClassifier:
    """Load ``folder`` with the inference plan, batch size, engine and cache the settings give.

    Args:
        settings: Uses ``torch_threads``, ``inference_workers``, ``inference_batch_size``,
            ``engine``, ``precision`` and ``data_dir`` (the ONNX backbone is cached in
            ``<data_dir>/cache``).
        folder: A model folder (config.json, heads, optional weights).
        backbone: A loaded backbone of the same variant to share (a hot swap keeps one).
    """
    plan = settings_plan(settings)
    return EmbeddingClassifier.from_dir(
        folder,
        threads=plan.threads,
        concurrency=plan.workers,
        batch_size=settings.inference_batch_size,
        engine=settings.engine,
        cache_dir=settings.resolved_cache_dir,
        backbone=backbone,
        precision=settings.precision,
    )
