"""Automatic dataset filters, each counted: too small, unreadable, duplicates,
near-duplicates, conflicting labels.

:func:`apply_filters` takes the *candidates* a new version would add (their bytes
and labels) and the items it already holds (copied from the parent version), and
decides for every candidate: ``included``, ``excluded`` (with a reason) or
``flagged`` (needs a human; never trained on). The rules:

* ``duplicate``: the same bytes (SHA-256) as another candidate or an existing item
  with compatible labels: merged, only counted (provenance notes the extra source).
* relabel: the same bytes as an existing item, different labels, coming from a
  *global* fix: a person corrected the label since the last retrain, so the
  existing item takes the fix's labels (provenance keeps the old ones).
* ``conflict``: the same bytes, or a near-duplicate, carrying different labels
  from different advertisers or fixes: every disagreeing member is ``flagged``.
* ``unreadable`` / ``too_small`` (shorter side < ``min_side`` px): ``excluded``.
* ``near_duplicate``: pHash within ``max_distance`` bits of an existing item or
  another candidate, with compatible labels: ``excluded``; the existing item (or
  the largest candidate) is kept.

Labels are compatible when no field is set on both sides to different values.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from cartag.errors import DecodeError
from cartag.imaging.decode import DecodedImage, decode_image
from cartag.imaging.keys import content_sha256, phash
from cartag.store.datasets import EXCLUDED, FLAGGED, INCLUDED
from cartag.training.fitting.cleaning import phash_groups

FILTERS: Final[tuple[str, ...]] = (
    "duplicate",
    "unreadable",
    "too_small",
    "near_duplicate",
    "conflict",
)
Labels = tuple[str | None, str | None]  # (image_type, color)


def compatible(a: Labels, b: Labels) -> bool:
    """No field set on both sides to different values."""
    return all(x is None or y is None or x == y for x, y in zip(a, b, strict=True))


def merged(a: Labels, b: Labels) -> Labels:
    """Field-wise union of two compatible label pairs."""
    return (a[0] or b[0], a[1] or b[1])


@dataclass
class Candidate:
    """An image a new version may add.

    Attributes:
        data: The image file's bytes.
        image_type: Type label or None.
        color: Color label or None.
        provenance: Where it came from (``source``, ``scope``, ``fix_audit_id``, ...).
    """

    data: bytes
    image_type: str | None
    color: str | None
    provenance: dict[str, Any]
    sha256: str = ""

    def __post_init__(self) -> None:
        if not self.sha256:
            self.sha256 = content_sha256(self.data)

    @property
    def labels(self) -> Labels:
        return (self.image_type, self.color)


@dataclass(frozen=True)
class Existing:
    """An item the new version already holds (copied from the parent)."""

    item_id: int
    content_sha256: str
    phash: str | None
    image_type: str | None
    color: str | None
    status: str

    @property
    def labels(self) -> Labels:
        return (self.image_type, self.color)


@dataclass
class Checked:
    """A candidate with its verdict.

    Attributes:
        candidate: The candidate (labels possibly merged with duplicates).
        status: ``included``, ``excluded`` or ``flagged``.
        reason: Why it is excluded or flagged (a filter name), else None.
        decoded: The decoded image (None when unreadable).
        phash: 64-bit hex pHash of the decoded image.
    """

    candidate: Candidate
    status: str = INCLUDED
    reason: str | None = None
    decoded: DecodedImage | None = None
    phash: str | None = None


@dataclass
class FilterOutcome:
    """What :func:`apply_filters` decided.

    Attributes:
        checked: One entry per distinct new image (exact duplicates merged away).
        existing_changes: ``{item_id: {column: value}}`` for existing items
            (relabelled by a global fix, or flagged by a conflict).
        counts: Per filter (:data:`FILTERS`), plus ``relabelled``.
    """

    checked: list[Checked]
    existing_changes: dict[int, dict[str, Any]] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)


def _source(provenance: dict[str, Any]) -> dict[str, Any]:
    keys = ("source", "scope", "fix_audit_id", "advertiser_id", "user", "url", "path")
    return {k: provenance[k] for k in keys if k in provenance}


def _flag(outcome: FilterOutcome, existing: Existing, labels_seen: list[dict[str, Any]]) -> None:
    change = outcome.existing_changes.setdefault(existing.item_id, {})
    change.update(status=FLAGGED, reason="conflict", conflict=labels_seen)


def apply_filters(
    candidates: Sequence[Candidate],
    existing: Sequence[Existing],
    *,
    min_side: int,
    max_pixels: int,
    max_distance: int,
) -> FilterOutcome:
    """Decide each candidate's status (module docstring gives the rules).

    Args:
        candidates: New images, in a stable order (it breaks ties).
        existing: Items already in the version.
        min_side: Shorter side below this many pixels -> ``too_small``.
        max_pixels: Decompression-bomb limit passed to the decoder.
        max_distance: pHash Hamming distance that makes two images near-duplicates.

    Returns:
        The verdicts; ``existing_changes`` values may hold a ``conflict`` key (the
        disagreeing labels) that callers put into the item's provenance.
    """
    counts: Counter[str] = Counter(dict.fromkeys(FILTERS, 0))
    counts["relabelled"] = 0
    outcome = FilterOutcome(checked=[])
    by_sha = {item.content_sha256: item for item in existing}

    # 1. Exact duplicates, among candidates and against existing items.
    groups: dict[str, list[Candidate]] = {}
    for cand in candidates:
        groups.setdefault(cand.sha256, []).append(cand)
    unique: list[Checked] = []
    for sha, members in groups.items():
        first = members[0]
        labels = first.labels
        agree = True
        for other in members[1:]:
            agree = agree and compatible(labels, other.labels)
            if agree:
                labels = merged(labels, other.labels)
        counts["duplicate"] += len(members) - 1
        if len(members) > 1:
            first.provenance = {
                **first.provenance,
                "also_from": [_source(m.provenance) for m in members[1:]],
            }
        seen = [{"labels": list(m.labels), **_source(m.provenance)} for m in members]
        old = by_sha.get(sha)
        if old is not None:
            fixes_global = all(m.provenance.get("scope") == "global" for m in members)
            if agree and compatible(old.labels, labels):
                counts["duplicate"] += 1
                continue
            if agree and fixes_global:
                change = outcome.existing_changes.setdefault(old.item_id, {})
                change.update(
                    image_type=labels[0] or old.image_type,
                    color=labels[1] or old.color,
                    relabelled={"from": list(old.labels), **_source(first.provenance)},
                )
                counts["relabelled"] += 1
                continue
            _flag(outcome, old, [{"labels": list(old.labels), "source": "version"}, *seen])
            counts["conflict"] += 1
            continue
        first.image_type, first.color = labels
        checked = Checked(first)
        if not agree:
            checked.status, checked.reason = FLAGGED, "conflict"
            first.provenance = {**first.provenance, "conflict": seen}
            counts["conflict"] += 1
        unique.append(checked)

    # 2. Unreadable and too small.
    for checked in unique:
        try:
            checked.decoded = decode_image(checked.candidate.data, max_pixels=max_pixels)
        except DecodeError as exc:
            checked.status, checked.reason = EXCLUDED, "unreadable"
            checked.candidate.provenance = {**checked.candidate.provenance, "error": exc.reason}
            counts["unreadable"] += 1
            continue
        checked.phash = phash(checked.decoded.image)
        if min(checked.decoded.width, checked.decoded.height) < min_side:
            checked.status, checked.reason = EXCLUDED, "too_small"
            counts["too_small"] += 1

    # 3. Near-duplicates (pHash), against existing items and among candidates.
    live = [c for c in unique if c.status != EXCLUDED and c.phash is not None]
    anchors = [e for e in existing if e.phash and e.status != EXCLUDED]
    hashes = [e.phash or "" for e in anchors] + [c.phash or "" for c in live]
    for group in phash_groups(hashes, max_distance):
        olds = [anchors[i] for i in group if i < len(anchors)]
        news = [live[i - len(anchors)] for i in group if i >= len(anchors)]
        if not news:
            continue  # the parent's own near-duplicates were judged when it was built
        olds_labels = [_current(o, outcome) for o in olds]
        group_labels: list[Labels] = olds_labels + [n.candidate.labels for n in news]
        if all(compatible(a, b) for i, a in enumerate(group_labels) for b in group_labels[i + 1 :]):
            keep = None
            if not olds:
                keep = max(
                    (n for n in news if n.status == INCLUDED),
                    key=lambda n: (_area(n), n.candidate.sha256),
                    default=None,
                )
            for n in news:
                if n is keep or n.status != INCLUDED:
                    continue
                ref = olds[0].content_sha256 if olds else keep.candidate.sha256 if keep else None
                n.status, n.reason = EXCLUDED, "near_duplicate"
                n.candidate.provenance = {**n.candidate.provenance, "duplicate_of": ref}
                counts["near_duplicate"] += 1
            continue
        seen = [{"labels": list(lb), "source": "version"} for lb in olds_labels] + [
            {"labels": list(n.candidate.labels), **_source(n.candidate.provenance)} for n in news
        ]
        for n in news:
            if n.status == INCLUDED:
                n.status, n.reason = FLAGGED, "conflict"
                n.candidate.provenance = {**n.candidate.provenance, "conflict": seen}
                counts["conflict"] += 1
        for o in olds:
            if o.status != FLAGGED and o.item_id not in outcome.existing_changes:
                _flag(outcome, o, seen)
                counts["conflict"] += 1
    outcome.checked = unique
    outcome.counts = dict(counts)
    return outcome


def _current(existing: Existing, outcome: FilterOutcome) -> Labels:
    change = outcome.existing_changes.get(existing.item_id, {})
    return (change.get("image_type", existing.image_type), change.get("color", existing.color))


def _area(checked: Checked) -> int:
    decoded = checked.decoded
    return decoded.width * decoded.height if decoded is not None else 0
