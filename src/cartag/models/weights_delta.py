"""Fine-tuned weights as a small patch on the pip package's ImageNet weights.

A fine-tuned EfficientNet-Lite0 is 13.6 MB in float32 and 6.9 MB in float16; the
change fine-tuning made to each weight is small, so cartag stores that change
instead, quantised to int8 with one scale per output channel (``cartag-delta/1``,
an ``.npz`` read with ``allow_pickle=False``)::

    __format__   "cartag-delta/1"
    __base__     the backbone id of the weights it patches ("efficientnet-lite0@57934424")
    q/<name>     int8, the tensor's shape: round(delta / scale) for tensors of 2+ dims
    s/<name>     float32 (C,): the scale of each output channel, max|delta| / 127
    f/<name>     float16: the delta of 1-dim tensors (batch-norm affine, biases)

Tensors fine-tuning did not change (batch-norm statistics, the ImageNet
classifier) are left out and keep the base's values. The rounding error of a
weight is at most half its channel's scale, i.e. 1/254 of the largest change in
that channel; heads are fitted on the embeddings of the decoded weights, so
they see exactly what the service runs.
"""

from __future__ import annotations

import io
from collections.abc import Mapping
from typing import Any, Final, cast

import numpy as np
import torch

DELTA_FORMAT: Final[str] = "cartag-delta/1"


def encode_delta(
    base: Mapping[str, torch.Tensor], tuned: Mapping[str, torch.Tensor], base_id: str
) -> bytes:
    """The ``cartag-delta/1`` file that turns ``base`` into (about) ``tuned``.

    Args:
        base: The package's state dict.
        tuned: The fine-tuned state dict (same keys and shapes).
        base_id: The base weights' backbone id, checked when the patch is applied.

    Returns:
        The compressed ``.npz`` bytes.
    """
    arrays: dict[str, np.ndarray] = {
        "__format__": np.asarray(DELTA_FORMAT),
        "__base__": np.asarray(base_id),
    }
    for name, tensor in tuned.items():
        if not tensor.is_floating_point():
            continue
        delta = (tensor.detach().float() - base[name].float()).numpy()
        if not delta.any():
            continue
        if delta.ndim >= 2:
            peak = np.abs(delta.reshape(len(delta), -1)).max(axis=1)
            scale = np.where(peak > 0, peak / 127.0, 1.0).astype(np.float32)
            shaped = scale.reshape(-1, *([1] * (delta.ndim - 1)))
            arrays[f"q/{name}"] = np.clip(np.rint(delta / shaped), -127, 127).astype(np.int8)
            arrays[f"s/{name}"] = scale
        else:
            arrays[f"f/{name}"] = delta.astype(np.float16)
    buffer = io.BytesIO()
    # numpy's stub would bind a key named allow_pickle to that flag; there is none.
    np.savez_compressed(buffer, **cast(dict[str, Any], arrays))
    return buffer.getvalue()


def apply_delta(
    base: Mapping[str, torch.Tensor], data: Mapping[str, np.ndarray], base_id: str
) -> dict[str, torch.Tensor]:
    """Decode a ``cartag-delta/1`` file onto ``base``.

    Args:
        base: The package's state dict.
        data: The arrays of the ``.npz``.
        base_id: The id of ``base``.

    Returns:
        The fine-tuned state dict (float32 where the base is).

    Raises:
        ValueError: Another format, another base, or a name/shape the base lacks.
    """
    if str(data.get("__format__", "")) != DELTA_FORMAT:
        raise ValueError(f"not a {DELTA_FORMAT} file")
    wanted = str(data["__base__"])
    if wanted != base_id:
        raise ValueError(
            f"it patches {wanted} but the installed weights are {base_id}; install the "
            "weights package version it was made from"
        )
    state = {name: tensor.clone() for name, tensor in base.items()}
    for key in data:
        kind, _, name = key.partition("/")
        if kind not in ("q", "f"):
            continue
        if name not in state:
            raise ValueError(f"{name} is not a weight of the base network")
        if kind == "q":
            quantised = data[key].astype(np.float32)
            scale = data[f"s/{name}"].reshape(-1, *([1] * (quantised.ndim - 1)))
            delta = torch.from_numpy(quantised * scale)
        else:
            delta = torch.from_numpy(data[key].astype(np.float32))
        if delta.shape != state[name].shape:
            raise ValueError(
                f"{name} has shape {tuple(delta.shape)}, the base's is {tuple(state[name].shape)}"
            )
        state[name] = state[name] + delta
    return state
