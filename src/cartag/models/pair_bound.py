"""Int8 weights whose neighbouring pairs cannot overflow 16 bits: one int8 model for every x86 CPU.

ONNX Runtime's u8s8 convolution kernels on x86 CPUs without VNNI (AVX2, AVX-512
without VNNI: most AMD EPYC before Zen 4, Intel before Cascade Lake) multiply
uint8 activations by int8 weights with ``vpmaddubsw``, which adds each *pair* of
neighbouring products (input channels ``2j`` and ``2j + 1``) into a *saturating*
int16. With 8-bit weights a pair reaches 255 * (127 + 127) = 64,770 and is clipped
to 32,767: on such a CPU the int8 backbone's embeddings of real photos had a cosine
of 0.968 to fp32 (min 0.735), against 0.997 with VNNI, whose instruction sums into
int32. ONNX Runtime's remedy, ``reduce_range`` (7-bit weights), halves every weight's
precision: cosine 0.987 (min 0.944).

This module bounds the pairs instead: each output channel's weight scale is raised
just enough that every pair of neighbouring weights sums (in magnitude, when they
have the same sign) to at most :data:`PAIR_LIMIT`; 255 * 128 = 32,640 < 32,767
leaves room for rounding. Channels without such a pair keep their scale, so the
model keeps nearly all of its precision (cosine 0.996, min 0.986) and computes the
same integers on every CPU: VNNI never saturates, and without VNNI no pair can.
``benchmarks/int8_pairs.py`` measures every variant (RESULTS.md, "Int8 on CPUs
without VNNI").

Only 1 x 1 convolutions are paired this way (the kernels pair neighbouring input
channels); a larger non-depthwise kernel, whose unfolded order is the kernel's own
affair, is bounded over *any* two of a channel's weights. Depthwise convolutions
accumulate each product in 32 bits and are left alone.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final

import numpy as np
import onnx
from onnx import numpy_helper

from cartag.errors import ModelError

# The largest |w_2j| + |w_2j+1| (same sign) allowed in int8 units: with rounding a
# pair is at most 128, and 255 * 128 = 32,640 fits int16.
PAIR_LIMIT: Final[int] = 127
_WEIGHT_SUFFIX: Final[str] = "_quantized"


def pair_sums(weights: np.ndarray, one_by_one: bool) -> np.ndarray:
    """The largest pair sum of each output channel, in the weights' own units.

    Args:
        weights: float (O, K) one row per output channel.
        one_by_one: Pair neighbours (2j, 2j + 1) only, as the 1 x 1 kernels do;
            otherwise any two weights of the channel.

    Returns:
        float (O,): the largest ``|a| + |b|`` of a same-sign pair, or ``max(|a|, |b|)``
        of an opposite-sign one (the larger product alone).
    """
    if not one_by_one:
        top = np.sort(np.abs(np.maximum(weights, 0)), axis=1)[:, -2:].sum(axis=1)
        bottom = np.sort(np.abs(np.minimum(weights, 0)), axis=1)[:, -2:].sum(axis=1)
        largest: np.ndarray = np.maximum(np.maximum(top, bottom), np.abs(weights).max(axis=1))
        return largest
    if weights.shape[1] % 2:
        weights = np.pad(weights, ((0, 0), (0, 1)))
    a, b = weights[:, 0::2], weights[:, 1::2]
    same = np.sign(a) * np.sign(b) > 0
    pairs = np.where(same, np.abs(a) + np.abs(b), np.maximum(np.abs(a), np.abs(b)))
    return pairs.max(axis=1)  # type: ignore[no-any-return]


def bound_pairs(
    model: onnx.ModelProto, floats: Mapping[str, np.ndarray], limit: int = PAIR_LIMIT
) -> int:
    """Requantize, in place, the weights of every convolution that could saturate.

    ``model`` is ONNX Runtime's QDQ output: a convolution reads its weight through a
    per-channel ``DequantizeLinear`` of ``<name>_quantized`` (int8, zero point 0)
    and its bias through one of ``<bias>_quantized`` (int32, scale = input scale x
    weight scale). The new weights are rounded from the float ones (``floats``, the
    prepared float graph's initializers), not from the int8 ones, so a channel is
    rounded once.

    Args:
        model: The quantized model (changed in place).
        floats: Initializer name -> float array, of the prepared float model.
        limit: :data:`PAIR_LIMIT`.

    Returns:
        How many output channels got a larger scale.
    """
    inits = {init.name: init for init in model.graph.initializer}
    producer = {out: node for node in model.graph.node for out in node.output}
    changed = 0
    for node in model.graph.node:
        if node.op_type != "Conv" or _group(node) > 1:
            continue
        weight = producer.get(node.input[1])
        if weight is None or weight.op_type != "DequantizeLinear":
            continue  # a convolution left in float
        floats_w = np.asarray(_float(floats, weight.input[0], node.name), dtype=np.float64)
        scale = numpy_helper.to_array(inits[weight.input[1]]).astype(np.float64)
        rows = floats_w.reshape(len(floats_w), -1)
        one_by_one = floats_w.ndim == 4 and floats_w.shape[2:] == (1, 1)
        needed = pair_sums(rows, one_by_one) / limit
        grow = needed > scale
        if not np.any(grow):
            continue
        new_scale = np.where(grow, needed, scale)
        old_q = numpy_helper.to_array(inits[weight.input[0]]).reshape(len(rows), -1)
        new_q = np.clip(np.round(rows / new_scale[:, None]), -127, 127).astype(np.int8)
        new_q = np.where(grow[:, None], new_q, old_q).astype(np.int8)
        _replace(inits[weight.input[0]], new_q.reshape(floats_w.shape))
        _replace(inits[weight.input[1]], new_scale.astype(np.float32))
        if len(node.input) > 2 and node.input[2]:
            _rescale_bias(producer.get(node.input[2]), inits, floats, scale, new_scale, grow)
        changed += int(grow.sum())
    return changed


def _float(floats: Mapping[str, np.ndarray], quantized: str, where: str) -> np.ndarray:
    """The float original of ``<name>_quantized``, from the prepared float graph."""
    name = quantized.removesuffix(_WEIGHT_SUFFIX)
    if name not in floats:
        raise ModelError(
            f"the float weights {name!r} of {where} are not in the prepared model, so its "
            "int8 weight pairs cannot be bounded; serve fp32 (CARTAG_PRECISION=fp32)"
        )
    return floats[name]


def _group(node: onnx.NodeProto) -> int:
    return next((int(a.i) for a in node.attribute if a.name == "group"), 1)


def _replace(init: onnx.TensorProto, value: np.ndarray) -> None:
    init.CopyFrom(numpy_helper.from_array(value, init.name))


def _rescale_bias(
    bias: onnx.NodeProto | None,
    inits: Mapping[str, onnx.TensorProto],
    floats: Mapping[str, np.ndarray],
    old_scale: np.ndarray,
    new_scale: np.ndarray,
    grow: np.ndarray,
) -> None:
    """Keep the bias's scale = input scale x weight scale for the rescaled channels."""
    if bias is None or bias.op_type != "DequantizeLinear":
        return
    quantized = numpy_helper.to_array(inits[bias.input[0]]).astype(np.int64)
    bias_scale = numpy_helper.to_array(inits[bias.input[1]]).astype(np.float64)
    new_bias_scale = bias_scale / old_scale * new_scale
    values = np.asarray(_float(floats, bias.input[0], "a bias"), dtype=np.float64)
    requantized = np.round(values / new_bias_scale)
    out = np.where(grow, requantized, quantized)
    _replace(inits[bias.input[0]], out.astype(np.int32))
    _replace(inits[bias.input[1]], np.where(grow, new_bias_scale, bias_scale).astype(np.float32))
