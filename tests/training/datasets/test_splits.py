"""Train/test split of a version: groups never straddle, parents' splits are kept."""

from __future__ import annotations

from collections import Counter

from cartag.training.datasets.splits import (
    MAX_LISTING,
    SplitItem,
    advertiser_split,
    assign_splits,
    listing_key,
)


def _item(n: int, stratum: str = "Dealer/Red", **kwargs: object) -> SplitItem:
    # pHashes far apart (distinct bytes spread over the hash) unless given.
    values: dict[str, object] = {
        "key": f"{n:064x}",
        "phash": f"{(n * 0x9E3779B97F4A7C15) % 2**64:016x}",
    }
    values.update(stratum=stratum, **kwargs)
    return SplitItem(**values)  # type: ignore[arg-type]


def test_stratified_share_per_class() -> None:
    items = [_item(i, "Dealer/Red") for i in range(50)] + [
        _item(100 + i, "Stock/White") for i in range(10)
    ]
    result = assign_splits(items, max_distance=0, test_fraction=0.2)
    per = Counter((item.stratum, split) for item, split in zip(items, result.splits, strict=True))
    assert per[("Dealer/Red", "test")] == 10 and per[("Stock/White", "test")] == 2
    # Deterministic.
    assert assign_splits(items, max_distance=0, test_fraction=0.2).splits == result.splits


def test_near_duplicates_and_listings_share_a_side() -> None:
    items = [_item(i) for i in range(40)]
    items[1] = _item(1, phash=items[0].phash)  # a near-duplicate of item 0
    items[5] = _item(5, listing="a|https://cdn/l1/")
    items[6] = _item(6, listing="a|https://cdn/l1/")
    result = assign_splits(items, max_distance=2, test_fraction=0.3)
    assert result.splits[0] == result.splits[1] and result.groups[0] == result.groups[1]
    assert result.splits[5] == result.splits[6] and result.groups[5] == result.groups[6]
    assert result.summary["multi_item_groups"] == 2


def test_parent_splits_are_kept_and_pull_their_group() -> None:
    parent = [_item(i, kept_split="test" if i < 5 else "train") for i in range(20)]
    new_dup = _item(99, phash=parent[0].phash)  # near-duplicate of a test item
    result = assign_splits([*parent, new_dup], max_distance=0, test_fraction=0.2)
    assert result.splits[:20] == [p.kept_split for p in parent]
    assert result.splits[20] == "test"


def test_declared_advertiser_test_sets() -> None:
    items = [_item(i, advertiser_id="a1" if i % 2 else "a2") for i in range(10)]
    result = assign_splits(items, max_distance=0, test_fraction=0.2, test_advertisers=["a1"])
    assert {s for s, i in zip(result.splits, items, strict=True) if i.advertiser_id == "a1"} == {
        "test:advertiser=a1"
    }
    assert advertiser_split("a1") == "test:advertiser=a1"


def test_listing_rule() -> None:
    assert listing_key({"listing_id": "L7"}) == "listing:L7"
    url = "https://cdn.example/d42/listing-9/photo-1.jpg?w=800"
    assert (
        listing_key({"url": url, "advertiser_id": "d42"})
        == "d42|https://cdn.example/d42/listing-9/"
    )
    assert listing_key({"source": "import", "path": "x.jpg"}) is None


def test_a_flat_cdn_folder_is_not_a_listing() -> None:
    items = [_item(i, listing="a|https://cdn/all/") for i in range(MAX_LISTING + 1)]
    result = assign_splits(items, max_distance=0, test_fraction=0.2)
    assert result.summary["listings_too_large"] == 1
    assert result.summary["multi_item_groups"] == 0
    assert Counter(result.splits)["test"] == round(0.2 * len(items))
