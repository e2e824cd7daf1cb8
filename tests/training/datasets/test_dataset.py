"""The dataset helpers: the stratified stable holdout."""

from __future__ import annotations

from cartag.training.datasets.dataset import holdout_mask


def test_holdout_is_stratified_and_stable() -> None:
    keys = [f"vcr-train/{c}/{i}.jpg" for c in ("Red", "Blue") for i in range(50)]
    strata = [k.split("/")[1] for k in keys]
    mask = holdout_mask(keys, strata)
    assert mask[:50].sum() == 10 and mask[50:].sum() == 10
    # Adding another stratum leaves the existing assignment untouched.
    more = keys + [f"vcr-train/Green/{i}.jpg" for i in range(7)]
    assert (holdout_mask(more, [k.split("/")[1] for k in more])[:100] == mask).all()
