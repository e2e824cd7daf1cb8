"""A model folder's ``config.json``: reading and checking it, and the blocks a build writes.

The layout is described in :mod:`cartag.models.classifier`; this module reads the
config (:func:`read_config`), the network it names (:func:`backbone_spec`), the
optional int8 block (:func:`int8_config`), and writes the ``backbone`` block and
the fine-tuned weights of a new folder (:func:`backbone_config`,
:func:`copy_backbone_weights`).
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path
from typing import Any, Final

from cartag.errors import ModelError
from cartag.models.backbone import PREPROCESS_ID, Backbone, BackboneSpec

log = logging.getLogger(__name__)

MODEL_FORMAT: Final[str] = "cartag-model/1"
CONFIG_NAME: Final[str] = "config.json"
WEIGHTS_NAME: Final[str] = "backbone.npz"

FIX_HINT = (
    "reinstall cartag to restore the bundled model, or set CARTAG_MODEL_DIR to a folder "
    "made by `cartag models build-bundled --out <dir>`"
)


def _plain_name(value: object) -> bool:
    return isinstance(value, str) and Path(value).name == value and value not in ("", ".", "..")


def int8_config(path: Path, config: dict[str, Any]) -> dict[str, Any] | None:
    """The folder's ``int8`` block (ranges file, int8 backbone id, heads), or None.

    Raises:
        ModelError: The block is malformed.
    """
    block = config.get("int8")
    if block is None:
        return None
    heads = block.get("heads") if isinstance(block, dict) else None
    if (
        not isinstance(heads, dict)
        or not {"image_type", "color"} <= set(heads)
        or not all(_plain_name(heads[k]) for k in ("image_type", "color"))
        or not _plain_name(block.get("quantization"))
        or not isinstance(block.get("backbone_id"), str)
    ):
        raise ModelError(
            f"{path / CONFIG_NAME}: int8 must name quantization (a file in the folder), "
            f"backbone_id and heads.image_type/heads.color; {FIX_HINT}"
        )
    return dict(block)


def precision_blocks(
    path: Path, config: dict[str, Any], precision: str, engine: str
) -> tuple[dict[str, Any], dict[str, Any], Path | None]:
    """What a folder serves at ``precision`` on ``engine``: its heads block, the block
    naming the backbone id (``backbone`` or ``int8``) and the ranges file (None: fp32).

    int8 falls back to fp32 (logged) without an ``int8`` block or off the onnx engine.

    Raises:
        ModelError: The ``int8`` block is malformed.
    """
    int8 = int8_config(path, config) if precision == "int8" else None
    if precision == "int8" and (int8 is None or engine != "onnx"):
        why = "the model folder has no int8 heads" if int8 is None else f"engine is {engine}"
        log.info("serving the fp32 backbone of %s: %s", path, why)
    if int8 is None or engine != "onnx":
        return config["heads"], config["backbone"], None
    return int8["heads"], int8, path / str(int8["quantization"])


def backbone_spec(path: Path, config: dict[str, Any] | None = None) -> BackboneSpec:
    """The network a model folder runs on: its variant, and its weights file if fine-tuned.

    Raises:
        ModelError: The config names a weights file that is not a plain name in the folder.
    """
    backbone_cfg = (config or read_config(path))["backbone"]
    weights = backbone_cfg.get("weights")
    if weights is None:
        return BackboneSpec(str(backbone_cfg["variant"]))
    if not _plain_name(weights):
        raise ModelError(
            f"{path / CONFIG_NAME}: backbone.weights must be a file name in the model folder "
            f"(like {WEIGHTS_NAME!r}), got {weights!r}; {FIX_HINT}"
        )
    return BackboneSpec(str(backbone_cfg["variant"]), path / weights)


def backbone_config(backbone: Backbone) -> dict[str, Any]:
    """The ``backbone`` block of a model's config.json: what :meth:`EmbeddingClassifier.from_dir`
    loads and checks (variant, weights id and file, input size, normalisation, preprocessing).

    A fine-tuned backbone's weights must be written beside the config with
    :func:`copy_backbone_weights`.
    """
    block: dict[str, Any] = {
        "variant": backbone.variant,
        "backbone_id": backbone.backbone_id,
        "input_size": backbone.input_size,
        "mean": list(backbone.mean),
        "std": list(backbone.std),
        "preprocess": PREPROCESS_ID,
        "embedding": "global average pool of extract_features()",
    }
    if backbone.weights_path is not None:
        block["weights"] = WEIGHTS_NAME
    return block


def copy_backbone_weights(backbone: Backbone, out_dir: Path) -> None:
    """Put a fine-tuned backbone's weights (and their JSON sidecar) into a model folder.

    Does nothing for a backbone with its pip package's weights.
    """
    source = backbone.weights_path
    if source is None:
        return
    target = out_dir / WEIGHTS_NAME
    if source.resolve() != target.resolve():
        shutil.copyfile(source, target)
        sidecar = source.with_suffix(".json")
        if sidecar.is_file():
            shutil.copyfile(sidecar, target.with_suffix(".json"))


def read_config(path: Path, hint: str = FIX_HINT) -> dict[str, Any]:
    """Read and check a model directory's ``config.json``.

    Args:
        path: The model folder.
        hint: What the error messages advise (the default: for the served model).

    Raises:
        ModelError: If the folder or file is missing or malformed.
    """
    if not path.is_dir():
        what = "is a file, not a folder" if path.exists() else "does not exist"
        raise ModelError(f"model folder {path} {what}; {hint}")
    config_path = path / CONFIG_NAME
    if not config_path.is_file():
        raise ModelError(f"{config_path} is missing; {hint}")
    try:
        config = json.loads(config_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelError(f"{config_path} is not valid JSON ({exc}); {hint}") from exc
    if (
        not isinstance(config, dict)
        or config.get("format") != MODEL_FORMAT
        or not isinstance(config.get("backbone"), dict)
        or "variant" not in config["backbone"]
        or not isinstance(config.get("heads"), dict)
        or not {"image_type", "color"} <= set(config["heads"])
    ):
        raise ModelError(
            f"{config_path} is not a {MODEL_FORMAT} config (needs backbone.variant and "
            f"heads.image_type/heads.color); {hint}"
        )
    return config
