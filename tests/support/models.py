"""Plain factory functions for model folders: the bundled heads re-saved as new versions."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from cartag.models.classifier import BUNDLED_DIR
from cartag.models.heads import LinearHead


def make_model_dir(
    dest: Path, version: str, *, temperature_scale: float = 1.1, broken: str | None = None
) -> Path:
    """A real model folder: the bundled heads with a new version and a changed temperature.

    Args:
        dest: Folder to create (must not exist).
        version: The ``version`` written to config.json.
        temperature_scale: Multiplies the type head's temperature, so the new model's
            scores differ slightly from the bundled one's.
        broken: ``truncated`` (type_head.npz cut in half), ``labels`` (type head
            labels in the wrong order) or ``nan`` (a NaN bias: loads, fails the smoke
            check); None for a working model.

    Returns:
        ``dest``.
    """
    shutil.copytree(BUNDLED_DIR, dest)
    config = json.loads((dest / "config.json").read_text(encoding="utf-8"))
    config["version"] = version
    (dest / "config.json").write_text(json.dumps(config, indent=2), encoding="utf-8")
    head_json = dest / "type_head.json"
    meta = json.loads(head_json.read_text(encoding="utf-8"))
    meta["temperature"] = float(meta.get("temperature", 1.0)) * temperature_scale
    head_json.write_text(json.dumps(meta, indent=2), encoding="utf-8")
    if broken == "truncated":
        npz = dest / "type_head.npz"
        data = npz.read_bytes()
        npz.write_bytes(data[: len(data) // 2])
    elif broken in ("labels", "nan"):
        head = LinearHead.load(dest / "type_head")
        order = list(range(len(head.labels)))[::-1] if broken == "labels" else None
        labels = [head.labels[i] for i in order] if order else list(head.labels)
        weight = head.weight[:, order] if order else head.weight
        bias = head.bias[order] if order else head.bias.copy()
        if broken == "nan":
            bias[0] = np.nan
        extra: dict[str, Any] = {k: v for k, v in head.metadata.items() if k != "labels"}
        LinearHead(labels, weight, bias, head.feature_mean, head.feature_std, extra).save(
            dest / "type_head"
        )
    elif broken is not None:
        raise ValueError(f"unknown breakage {broken!r}")
    return dest


def type_metrics(recalls: dict[str, float], *, support: int = 50) -> dict[str, Any]:
    """Registry metrics for one test set (``cars@1:test``) with these image-type recalls."""
    per_class = {
        label: {"precision": 0.9, "recall": recall, "support": support}
        for label, recall in recalls.items()
    }
    return {
        "cars@1:test": {
            "image_type": {
                "accuracy": sum(recalls.values()) / len(recalls),
                "macro_recall": sum(recalls.values()) / len(recalls),
                "labels": list(recalls),
                "per_class": per_class,
                "confusion": [],
            }
        }
    }
