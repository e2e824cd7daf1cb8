"""Steps 4 and 5 of a dataset build: checked candidates become items, items get splits.

Plain functions that :class:`~cartag.training.datasets.dataset_build.DatasetBuilder`
calls once the filters have judged every candidate: :func:`new_items` stores each
candidate's bytes (and its crop, a new blob whose provenance keeps the original) and
makes the version's new items; :func:`split_items` assigns every live item (included or
flagged) its split and group, keeping the splits the parent version had given.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from cartag.imaging.keys import content_sha256
from cartag.store import datasets as repo
from cartag.store.blobs import BlobStore
from cartag.training.datasets.candidates import candidate_suspicion, is_candidate
from cartag.training.datasets.crop import Cropper, crop_checked
from cartag.training.datasets.filters import Checked
from cartag.training.datasets.splits import SplitItem, assign_splits, listing_key

_SUFFIXES = {"JPEG": "jpg", "PNG": "png", "GIF": "gif", "WEBP": "webp", "BMP": "bmp"}


def new_items(
    checked_all: Sequence[Checked],
    blobs: BlobStore,
    cropper: Cropper,
    taken: set[str],
    counts: dict[str, int],
    review_limit: int,
) -> tuple[list[repo.NewItem], int]:
    """Store the checked candidates' bytes and make their items.

    Args:
        checked_all: The filters' verdicts, in order.
        blobs: Where the bytes (and crops) go, content-addressed.
        cropper: Crops an image that is not excluded.
        taken: Content hashes the version already holds; grows with each new item.
        counts: The filters' counts; ``duplicate`` grows for a crop already held.
        review_limit: The candidate limit their suspicion is scaled by.

    Returns:
        The new items, and how many of them were cropped.
    """
    items: list[repo.NewItem] = []
    cropped = 0
    for checked in checked_all:
        cand = checked.candidate
        original_path = blobs.put(cand.data, _suffix(checked))
        data, crop = (cand.data, None)
        if checked.status != repo.EXCLUDED:
            data, crop = crop_checked(checked, cropper)
        provenance = dict(cand.provenance)
        sha, path = cand.sha256, original_path
        width = checked.decoded.width if checked.decoded else None
        height = checked.decoded.height if checked.decoded else None
        if crop is not None:
            sha, path = content_sha256(data), blobs.put(data, "jpg")
            width, height = crop["box"][2] - crop["box"][0], crop["box"][3] - crop["box"][1]
            provenance.update(
                crop=crop, original_sha256=cand.sha256, original_blob_path=original_path
            )
            cropped += 1
        if sha in taken:
            counts["duplicate"] += 1
            continue
        taken.add(sha)
        items.append(
            repo.NewItem(
                content_sha256=sha,
                blob_path=path,
                image_type=cand.image_type,
                color=cand.color,
                status=checked.status,
                reason=checked.reason,
                provenance=provenance,
                phash=checked.phash,
                width=width,
                height=height,
                suspicion=candidate_suspicion(int(provenance["rank"]), review_limit)
                if is_candidate(provenance)
                else None,
            )
        )
    return items, cropped


def split_items(
    items: list[repo.NewItem],
    copied: int,
    *,
    max_distance: int,
    test_fraction: float,
    test_advertisers: Sequence[str],
) -> tuple[list[int], dict[str, Any]]:
    """Assign splits and groups to the live items, in place.

    Included and flagged items are live (a flagged item accepted in review is ready);
    the first ``copied`` items came from the parent and keep its split.

    Returns:
        The live items' indices, and the split summary.
    """
    live = [i for i, item in enumerate(items) if item.status != repo.EXCLUDED]
    result = assign_splits(
        [
            SplitItem(
                key=items[i].content_sha256,
                phash=items[i].phash,
                stratum=f"{items[i].image_type or '-'}/{items[i].color or '-'}",
                listing=listing_key(items[i].provenance),
                advertiser_id=_str_or_none(items[i].provenance.get("advertiser_id")),
                kept_split=items[i].split if i < copied else None,
            )
            for i in live
        ],
        max_distance=max_distance,
        test_fraction=test_fraction,
        test_advertisers=list(test_advertisers),
    )
    for i, split, group in zip(live, result.splits, result.groups, strict=True):
        items[i] = replace(items[i], split=split, group_key=group)
    return live, result.summary


def _str_or_none(value: object) -> str | None:
    return None if value is None else str(value)


def _suffix(checked: Checked) -> str:
    return _SUFFIXES.get(checked.decoded.format, "") if checked.decoded else ""
