"""The int8 fine-tuning delta: bounded rounding, what is stored, what is refused."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch

from cartag.models.weights_delta import DELTA_FORMAT, apply_delta, encode_delta

BASE_ID = "efficientnet-lite0@12345678"


def _states() -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    gen = torch.Generator().manual_seed(0)
    base = {
        "conv.weight": torch.randn(4, 3, 3, 3, generator=gen),
        "bn.weight": torch.ones(4),
        "bn.running_mean": torch.zeros(4),
        "bn.num_batches_tracked": torch.tensor(7),
    }
    tuned = {name: tensor.clone() for name, tensor in base.items()}
    tuned["conv.weight"] += 0.01 * torch.randn(4, 3, 3, 3, generator=gen)
    tuned["conv.weight"][2] += 0.5  # one channel moved far: its own scale
    tuned["bn.weight"] += torch.tensor([0.1, -0.2, 0.0, 0.3])
    return base, tuned


def _arrays(blob: bytes) -> dict[str, np.ndarray]:
    with np.load(io.BytesIO(blob), allow_pickle=False) as data:
        return dict(data.items())


def test_round_trip_error_is_half_a_step_per_channel() -> None:
    base, tuned = _states()
    data = _arrays(encode_delta(base, tuned, BASE_ID))
    assert str(data["__format__"]) == DELTA_FORMAT and str(data["__base__"]) == BASE_ID
    # Unchanged tensors (statistics, counters) are not stored.
    assert sorted(data) == [
        "__base__",
        "__format__",
        "f/bn.weight",
        "q/conv.weight",
        "s/conv.weight",
    ]
    decoded = apply_delta(base, data, BASE_ID)
    error = (decoded["conv.weight"] - tuned["conv.weight"]).abs().flatten(1).max(dim=1).values
    step = torch.from_numpy(data["s/conv.weight"])
    assert torch.all(error <= step / 2 + 1e-7)
    # The far-moved channel does not coarsen the others.
    assert step[2] > 10 * step[0]
    torch.testing.assert_close(decoded["bn.weight"], tuned["bn.weight"], atol=1e-3, rtol=0)
    assert torch.equal(decoded["bn.running_mean"], base["bn.running_mean"])
    assert int(decoded["bn.num_batches_tracked"]) == 7


def test_refuses_another_base_or_format() -> None:
    base, tuned = _states()
    data = _arrays(encode_delta(base, tuned, BASE_ID))
    with pytest.raises(ValueError, match="patches efficientnet-lite0@12345678"):
        apply_delta(base, data, "efficientnet-lite0@87654321")
    with pytest.raises(ValueError, match="not a cartag-delta/1 file"):
        apply_delta(base, {**data, "__format__": np.asarray("other")}, BASE_ID)


def test_refuses_names_and_shapes_the_base_lacks() -> None:
    base, tuned = _states()
    data = _arrays(encode_delta(base, tuned, BASE_ID))
    renamed = {**data, "f/other.bias": data["f/bn.weight"]}
    with pytest.raises(ValueError, match="other.bias is not a weight"):
        apply_delta(base, renamed, BASE_ID)
    wrong = {**data, "f/bn.weight": np.zeros(5, dtype=np.float16)}
    with pytest.raises(ValueError, match="bn.weight has shape"):
        apply_delta(base, wrong, BASE_ID)
