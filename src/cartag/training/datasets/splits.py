"""Train/test split of a dataset version: grouped, stratified, stable across versions.

Rule (recorded in the version's stats as ``split.rule``):

1. **Groups.** Items whose pHashes are within ``max_distance`` bits
   (near-duplicates, transitively) and items of the same *listing* share a group.
   A listing is the item's ``provenance.listing_id`` when it has one (import CSV
   column ``listing_id``); else, for images that came from a fix, the advertiser
   plus the image URL up to its last ``/`` (``dealer-42|https://cdn/x/listing-9/``);
   imported images without a listing id are their own listing. A "listing" of
   more than ``MAX_LISTING`` images is not one (a CDN that keeps every photo of an
   advertiser in one folder) and links nothing. A group never straddles train and test.
2. **Kept splits.** Items the parent version had keep their split. A new item in
   a group with parent items takes their split (the most common, if they differ).
3. **Advertiser test sets.** A new item whose advertiser has a declared test set
   (``--test-set advertiser=ID``; declared sets are inherited from the parent)
   goes, with its whole group's new items, to ``test:advertiser=ID``.
4. **Stratified.** The remaining groups are split per stratum (the
   ``image_type/color`` label pair of the group's first member): groups are
   taken in the order of ``sha256("cartag-split-v1:" + group key)`` (the salted
   order of :mod:`cartag.training.datasets.dataset`) and go to ``test`` while that brings
   the stratum's test share (parent items included) closer to ``test_fraction``.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final
from urllib.parse import urlsplit, urlunsplit

from cartag.training.datasets.dataset import split_key
from cartag.training.fitting.cleaning import phash_groups

# Listing pages show a few dozen photos; a bigger "listing" is a flat CDN folder.
MAX_LISTING: Final[int] = 60
TRAIN: Final[str] = "train"
TEST: Final[str] = "test"
SPLIT_RULE: Final[str] = (
    "groups = near-duplicates (pHash) + same listing (listing_id, else advertiser + URL up to "
    f"its last '/'; at most {MAX_LISTING} images); parent items keep their split and pull "
    "their group along; new items of a "
    "declared advertiser go to test:advertiser=ID; other groups are split per image_type/color "
    "stratum in sha256('cartag-split-v1:' + group key) order towards test_fraction"
)


def advertiser_split(advertiser_id: str) -> str:
    """The split name of an advertiser's ad-hoc test set: ``test:advertiser=ID``."""
    return f"{TEST}:advertiser={advertiser_id}"


def listing_key(provenance: dict[str, object]) -> str | None:
    """The listing an item belongs to (rule 1 of the module docstring), or None."""
    listing = provenance.get("listing_id")
    if listing:
        return f"listing:{listing}"
    url, advertiser = provenance.get("url"), provenance.get("advertiser_id")
    if isinstance(url, str) and url and advertiser is not None:
        parts = urlsplit(url)
        folder = parts.path.rsplit("/", 1)[0] + "/"
        return f"{advertiser}|{urlunsplit((parts.scheme, parts.netloc, folder, '', ''))}"
    return None


@dataclass(frozen=True)
class SplitItem:
    """What the split needs to know about one item.

    Attributes:
        key: A stable unique id (the content SHA-256).
        phash: 64-bit hex pHash, or None.
        stratum: The class the split is stratified by.
        listing: :func:`listing_key`, or None.
        advertiser_id: Where a fix came from, or None.
        kept_split: The parent's split for an item it already had, else None.
    """

    key: str
    phash: str | None
    stratum: str
    listing: str | None = None
    advertiser_id: str | None = None
    kept_split: str | None = None


@dataclass(frozen=True)
class SplitResult:
    """Split and group per item (input order), and a summary for the stats."""

    splits: list[str]
    groups: list[str]
    summary: dict[str, object]


def _groups(items: Sequence[SplitItem], max_distance: int) -> tuple[list[int], int]:
    """Root index of each item's group (union-find over near-dup and listing links),
    and the number of listings ignored as too large."""
    parent = list(range(len(items)))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    def union(a: int, b: int) -> None:
        ra, rb = find(a), find(b)
        if ra != rb:
            parent[max(ra, rb)] = min(ra, rb)

    hashed = [i for i, item in enumerate(items) if item.phash]
    for group in phash_groups([items[i].phash or "" for i in hashed], max_distance):
        for member in group[1:]:
            union(hashed[group[0]], hashed[member])
    sizes = Counter(item.listing for item in items if item.listing is not None)
    first_of_listing: dict[str, int] = {}
    for i, item in enumerate(items):
        if item.listing is not None and sizes[item.listing] <= MAX_LISTING:
            union(first_of_listing.setdefault(item.listing, i), i)
    return [find(i) for i in range(len(items))], sum(1 for n in sizes.values() if n > MAX_LISTING)


def assign_splits(
    items: Sequence[SplitItem],
    *,
    max_distance: int,
    test_fraction: float,
    test_advertisers: Sequence[str] = (),
) -> SplitResult:
    """Split items by the rule of the module docstring.

    Args:
        items: Every item that takes part (included and flagged ones).
        max_distance: pHash distance that links near-duplicates.
        test_fraction: Target share of ``test`` per stratum, in (0, 1).
        test_advertisers: Advertisers with a declared test set, in declaration order.

    Returns:
        ``splits`` and ``groups`` (group key = smallest member key) per item, and a
        summary: counts per split, groups, groups straddling splits in the parent.
    """
    if not 0 < test_fraction < 1:
        raise ValueError("test_fraction must be in (0, 1)")
    roots, too_large = _groups(items, max_distance)
    members: dict[int, list[int]] = defaultdict(list)
    for i, root in enumerate(roots):
        members[root].append(i)
    group_key = {root: min(items[i].key for i in idx) for root, idx in members.items()}
    splits: list[str | None] = [item.kept_split for item in items]
    straddling = 0
    free: list[int] = []
    declared = list(test_advertisers)
    for root, idx in members.items():
        kept = Counter(items[i].kept_split for i in idx if items[i].kept_split)
        if len(kept) > 1:
            straddling += 1
        advertisers = {items[i].advertiser_id for i in idx if items[i].kept_split is None}
        target = next((advertiser_split(a) for a in declared if a in advertisers), None)
        if target is None and kept:
            target = sorted(kept.items(), key=lambda kv: (-kv[1], kv[0]))[0][0]
        if target is not None:
            for i in idx:
                if splits[i] is None:
                    splits[i] = target
        else:
            free.append(root)

    # Rule 4: per stratum, test share of everything already placed plus the free groups.
    total: Counter[str] = Counter(item.stratum for item in items)
    in_test: Counter[str] = Counter(
        items[i].stratum for i, split in enumerate(splits) if split == TEST
    )
    by_stratum: dict[str, list[int]] = defaultdict(list)
    for root in free:
        first = min(members[root], key=lambda i: items[i].key)
        by_stratum[items[first].stratum].append(root)
    for stratum, roots_here in by_stratum.items():
        want = test_fraction * total[stratum]
        have = float(in_test[stratum])
        for root in sorted(roots_here, key=lambda r: split_key(group_key[r])):
            size = len(members[root])
            side = TEST if abs(have + size - want) < abs(have - want) else TRAIN
            if side == TEST:
                have += size
            for i in members[root]:
                splits[i] = side
    final = [s or TRAIN for s in splits]
    summary: dict[str, object] = {
        "rule": SPLIT_RULE,
        "test_fraction": test_fraction,
        "counts": dict(sorted(Counter(final).items())),
        "groups": len(members),
        "multi_item_groups": sum(1 for idx in members.values() if len(idx) > 1),
        "straddling_parent_groups": straddling,
        "listings_too_large": too_large,
    }
    return SplitResult(final, [group_key[r] for r in roots], summary)
