"""Dataset filters: every rule decides and is counted."""

from __future__ import annotations

from typing import Any

from cartag.imaging.keys import content_sha256
from cartag.training.datasets.filters import Candidate, Existing, apply_filters
from tests.support.images import jpeg_bytes, truncated_jpeg_bytes
from tests.training.dataset_images import pattern_jpeg

LIMITS: dict[str, Any] = {"min_side": 64, "max_pixels": 10**8, "max_distance": 6}


def _fix(data: bytes, image_type: str | None, color: str | None, **prov: Any) -> Candidate:
    return Candidate(data, image_type, color, {"source": "fix", "scope": "global", **prov})


def _verdicts(outcome: Any) -> list[tuple[str, str | None]]:
    return [(c.status, c.reason) for c in outcome.checked]


def test_clean_images_are_included_with_their_hash_and_size() -> None:
    outcome = apply_filters([_fix(pattern_jpeg(1), "Dealer", "Red")], [], **LIMITS)
    (checked,) = outcome.checked
    assert (checked.status, checked.reason) == ("included", None)
    assert checked.decoded is not None and checked.decoded.width == 160
    assert checked.phash is not None and len(checked.phash) == 16
    assert outcome.counts == {
        "duplicate": 0,
        "unreadable": 0,
        "too_small": 0,
        "near_duplicate": 0,
        "conflict": 0,
        "relabelled": 0,
    }


def test_unreadable_and_too_small_are_excluded_and_counted() -> None:
    outcome = apply_filters(
        [
            _fix(b"<html>not an image</html>", "Dealer", None),
            _fix(truncated_jpeg_bytes(), "Dealer", None),
            _fix(jpeg_bytes(100, 40), "Dealer", None),
            _fix(pattern_jpeg(2), "Dealer", None),
        ],
        [],
        **LIMITS,
    )
    assert _verdicts(outcome) == [
        ("excluded", "unreadable"),
        ("excluded", "unreadable"),
        ("excluded", "too_small"),
        ("included", None),
    ]
    assert outcome.checked[0].candidate.provenance["error"] == "not_an_image"
    assert (outcome.counts["unreadable"], outcome.counts["too_small"]) == (2, 1)


def test_exact_duplicates_merge_when_labels_agree_and_flag_when_they_do_not() -> None:
    same, other = pattern_jpeg(3), pattern_jpeg(4)
    outcome = apply_filters(
        [
            _fix(same, "Dealer", None, advertiser_id="a1"),
            _fix(same, None, "Red", advertiser_id="a2", scope="advertiser"),
            _fix(other, None, "Red", advertiser_id="a1", scope="advertiser"),
            _fix(other, None, "Blue", advertiser_id="a2", scope="advertiser"),
        ],
        [],
        **LIMITS,
    )
    merged, disputed = outcome.checked
    assert (merged.status, merged.candidate.labels) == ("included", ("Dealer", "Red"))
    assert merged.candidate.provenance["also_from"][0]["advertiser_id"] == "a2"
    assert (disputed.status, disputed.reason) == ("flagged", "conflict")
    assert {tuple(c["labels"]) for c in disputed.candidate.provenance["conflict"]} == {
        (None, "Red"),
        (None, "Blue"),
    }
    assert (outcome.counts["duplicate"], outcome.counts["conflict"]) == (2, 1)


def test_near_duplicates_within_new_images_keep_the_largest() -> None:
    small = pattern_jpeg(5, size=(160, 120), quality=40)
    large = pattern_jpeg(5, size=(200, 150))
    outcome = apply_filters(
        [_fix(small, "Dealer", "Red"), _fix(large, "Dealer", "Red")], [], **LIMITS
    )
    assert _verdicts(outcome) == [("excluded", "near_duplicate"), ("included", None)]
    assert outcome.checked[0].candidate.provenance["duplicate_of"] == content_sha256(large)


def test_near_duplicate_of_an_existing_item_is_dropped_or_flagged() -> None:
    original = pattern_jpeg(6)
    outcome_ = apply_filters([_fix(original, "Dealer", "Red")], [], **LIMITS)
    kept = outcome_.checked[0]
    existing = [Existing(0, kept.candidate.sha256, kept.phash, "Dealer", "Red", "included")]
    copy = pattern_jpeg(6, quality=40)

    agreeing = apply_filters([_fix(copy, "Dealer", None)], existing, **LIMITS)
    assert _verdicts(agreeing) == [("excluded", "near_duplicate")]
    assert not agreeing.existing_changes

    disagreeing = apply_filters(
        [_fix(copy, "Stock", None, scope="advertiser", advertiser_id="a9")], existing, **LIMITS
    )
    assert _verdicts(disagreeing) == [("flagged", "conflict")]
    assert disagreeing.existing_changes[0]["status"] == "flagged"
    assert disagreeing.counts["conflict"] == 2


def test_same_bytes_as_an_existing_item() -> None:
    data = pattern_jpeg(7)
    existing = [Existing(0, content_sha256(data), None, "Stock", "Red", "included")]
    # Same labels: a duplicate, nothing changes.
    same = apply_filters([_fix(data, "Stock", None)], existing, **LIMITS)
    assert same.checked == [] and same.counts["duplicate"] == 1 and not same.existing_changes
    # A global fix says otherwise: a person corrected the label; the item takes it.
    fixed = apply_filters([_fix(data, "Dealer", None, fix_audit_id=5)], existing, **LIMITS)
    change = fixed.existing_changes[0]
    assert (change["image_type"], change["color"]) == ("Dealer", "Red")
    assert change["relabelled"]["from"] == ["Stock", "Red"]
    assert change["relabelled"]["fix_audit_id"] == 5
    assert fixed.counts["relabelled"] == 1
    # An advertiser's override disagrees: flagged, never silently applied.
    override = apply_filters(
        [_fix(data, "Dealer", None, scope="advertiser", advertiser_id="a3")], existing, **LIMITS
    )
    assert override.existing_changes[0]["status"] == "flagged"
    assert override.counts["conflict"] == 1
