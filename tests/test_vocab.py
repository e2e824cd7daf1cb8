"""The shared vocabulary: advertiser ids."""

from __future__ import annotations

import re

import pytest

from cartag.errors import InputError
from cartag.vocab import ADVERTISER_ID_PATTERN, check_advertiser_id


@pytest.mark.parametrize(
    "value", ["dealer-42", "group/dealer-7", ".hidden", "...", "..a", "a.b.c", "x:y@z", "a" * 128]
)
def test_advertiser_ids(value: str) -> None:
    assert check_advertiser_id(value) == value
    assert re.match(ADVERTISER_ID_PATTERN, value)  # the API's schema says the same


@pytest.mark.parametrize(
    "value", ["", " ", "a b", "..", ".", "a/../b", "a/./b", "/a", "a/", "a//b", "é", "a" * 129]
)
def test_not_advertiser_ids(value: str) -> None:
    with pytest.raises(InputError) as caught:
        check_advertiser_id(value, "--advertiser")
    assert caught.value.field == "--advertiser"
    assert not re.match(ADVERTISER_ID_PATTERN, value) or len(value) > 128 or not value.strip()
