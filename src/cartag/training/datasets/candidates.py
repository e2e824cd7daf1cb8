"""Dataset candidates: images the next dataset version should have a person look at.

``cartag dataset create --candidates KIND`` proposes stored images the model answered
and nobody fixed, seen in an advertiser's request within the recent window
(``CARTAG_DATASET_CANDIDATE_RECENT_DAYS``, today included), at most
``CARTAG_DATASET_CANDIDATE_LIMIT`` per kind:

* ``fix-rate-jump`` — images of the advertisers whose fix rate jumped
  (:mod:`cartag.training.datasets.fix_rate_jumps` gives the rule). Each advertiser's
  images come lowest model confidence first — where a model whose answers this
  advertiser now corrects is most likely wrong again — and the advertisers take turns,
  the highest recent fix rate first, so one large advertiser cannot fill the list.
* ``far-from-training`` — images whose ``novelty`` (cosine distance to the nearest
  centroid of the serving model's training reference) exceeds the model's far threshold
  (``config.json["reference"]["far_threshold"]``, the held-out p95), farthest first.

A candidate is skipped, before any download, when its stored bytes or pHash match an
item of the parent version (``in_parent``), an image whose fix this build adds
(``fixed``), a candidate of the other kind (``other_kind``) or of the same kind (two
jumping advertisers saw it: ``duplicate``); it is then downloaded
like a fixed image and skipped when that fails (``download_failed``) or the URL now
serves another picture (``changed``). Its labels are the model's answer, a proposal:
the item is ``flagged`` (reason ``candidate``), never trained on until a reviewer
accepts or corrects it. Its suspicion, :func:`candidate_suspicion`, puts it in the
ranking's "likely label error" band (1, 2), in its kind's order, the two kinds
interleaved.
"""

from __future__ import annotations

import datetime as dt
import json
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import numpy as np
from sqlalchemy.orm import Session

from cartag.errors import InputError
from cartag.imaging.keys import content_sha256
from cartag.models.reference import recorded_far_threshold
from cartag.net.outcomes import Fetched, FetchOutcome
from cartag.store import candidates as candidate_repo
from cartag.store.candidates import StoredImage
from cartag.store.datasets import EXCLUDED, FLAGGED, FixedImage
from cartag.store.tables import DatasetItemRow
from cartag.training.datasets.filters import Candidate, Checked, Existing, apply_filters
from cartag.training.datasets.fix_rate_jumps import JumpRule, fix_rate_jumps, window_start

FIX_RATE_JUMP: Final[str] = "fix-rate-jump"
FAR_FROM_TRAINING: Final[str] = "far-from-training"
KINDS: Final[tuple[str, ...]] = (FIX_RATE_JUMP, FAR_FROM_TRAINING)
SOURCE: Final[str] = "candidate"
REASON: Final[str] = "candidate"
# Pages read from a pool per kept candidate at most, so that a pool of images already in
# the parent cannot make a build scan the whole images table.
_MAX_SCAN: Final[int] = 5


def why(kind: str) -> str:
    """The provenance/stats name of a kind: ``fix-rate-jump`` -> ``fix_rate_jump``."""
    return kind.replace("-", "_")


def parse_kinds(values: Sequence[str]) -> tuple[str, ...]:
    """The ``--candidates`` values, checked, without repeats.

    Raises:
        InputError: An unknown kind (the message lists the known ones).
    """
    kinds: list[str] = []
    for value in values:
        kind = value.strip().lower().replace("_", "-")
        if kind not in KINDS:
            raise InputError(
                f"--candidates {value!r}: choose from {', '.join(KINDS)} (repeat the option "
                "for both)",
                field="candidates",
            )
        if kind not in kinds:
            kinds.append(kind)
    return tuple(kinds)


def read_far_threshold(folder: Path) -> float:
    """The far threshold a model folder records: ``config.json["reference"]["far_threshold"]``.

    Raises:
        InputError: No config.json, or no usable threshold in it (the message says how to
            give one).
    """
    config = folder / "config.json"
    hint = (
        "pass --far-threshold VALUE (a cosine distance, e.g. 0.3), or give the model a "
        f"training reference: cartag models add-reference {folder}"
    )
    try:
        document = json.loads(config.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise InputError(f"cannot read {config}: {exc}; {hint}", field="far_threshold") from exc
    value = recorded_far_threshold(document) if isinstance(document, dict) else None
    if value is None:
        raise InputError(
            f"{config} records no usable reference far_threshold (the model was built before "
            f"training references were kept); {hint}",
            field="far_threshold",
        )
    return value


@dataclass(frozen=True)
class CandidateRequest:
    """Which candidates a build proposes.

    Attributes:
        kinds: Of :data:`KINDS`.
        limit: At most this many images per kind.
        rule: The fix-rate jump rule (its ``recent_days`` is also the window of images).
        far_threshold: Novelty above which an image is far (needed for far-from-training).
        threshold_source: Where the threshold came from (shown in the stats).
    """

    kinds: tuple[str, ...]
    limit: int = 200
    rule: JumpRule = field(default_factory=JumpRule)
    far_threshold: float | None = None
    threshold_source: str | None = None


def phash_array(hashes: Sequence[str | None]) -> np.ndarray:
    """uint64 (N,) of the 64-bit hex pHashes given (others are left out)."""
    return np.asarray([int(h, 16) for h in hashes if h and len(h) == 16], dtype=np.uint64)


@dataclass(frozen=True)
class Known:
    """What a build already holds, that a candidate must not repeat.

    Attributes:
        parent_sha256: Content hashes of the parent's items (and their uncropped originals).
        parent_phash: uint64 (P,) pHashes of the parent's items.
        fixed_keys: Image keys of the fixes this build adds.
        fixed_sha256: Their content hashes.
        fixed_phash: uint64 (F,) their pHashes.
        distance: pHash bits within which two images are the same picture.
    """

    parent_sha256: frozenset[str] = frozenset()
    parent_phash: np.ndarray = field(default_factory=lambda: phash_array([]))
    fixed_keys: frozenset[str] = frozenset()
    fixed_sha256: frozenset[str] = frozenset()
    fixed_phash: np.ndarray = field(default_factory=lambda: phash_array([]))
    distance: int = 4

    def clash(self, image: StoredImage) -> str | None:
        """``in_parent`` / ``fixed`` when the image is already there, else None."""
        if image.content_sha256 in self.parent_sha256 or self._near(image, self.parent_phash):
            return "in_parent"
        if (
            image.image_key in self.fixed_keys
            or image.content_sha256 in self.fixed_sha256
            or self._near(image, self.fixed_phash)
        ):
            return "fixed"
        return None

    def _near(self, image: StoredImage, hashes: np.ndarray) -> bool:
        # Vectorised: a parent may hold tens of thousands of items.
        mine = phash_array([image.phash])
        if not len(mine) or not len(hashes):
            return False
        return bool((np.bitwise_count(hashes ^ mine[0]) <= self.distance).any())


def known_from(
    parent_items: Sequence[DatasetItemRow], fixes: Sequence[FixedImage], distance: int
) -> Known:
    """What candidates must not repeat: the parent's items and the fixes being added."""
    parent_sha = {i.content_sha256 for i in parent_items} | {
        str(i.provenance["original_sha256"])
        for i in parent_items
        if i.provenance.get("original_sha256")
    }
    return Known(
        parent_sha256=frozenset(parent_sha),
        parent_phash=phash_array([i.phash for i in parent_items]),
        fixed_keys=frozenset(f.image_key for f in fixes),
        fixed_sha256=frozenset(f.content_sha256 for f in fixes if f.content_sha256),
        fixed_phash=phash_array([f.phash for f in fixes]),
        distance=distance,
    )


@dataclass(frozen=True)
class Pick:
    """A stored image chosen as a candidate: its kind, place in that kind's order, why."""

    kind: str
    rank: int
    image: StoredImage
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class Selection:
    """The picks of every kind and, per kind, what was found and skipped (build stats)."""

    picks: list[Pick] = field(default_factory=list)
    stats: dict[str, Any] = field(default_factory=dict)


def select_candidates(
    session: Session, request: CandidateRequest, *, now: dt.datetime, known: Known
) -> Selection:
    """Pick each requested kind's candidates (module docstring), ``fix-rate-jump`` first.

    Raises:
        InputError: far-from-training without a threshold.
    """
    today = now.astimezone(dt.UTC).date()
    first_day = window_start(today, request.rule.recent_days)
    since = dt.datetime.combine(first_day, dt.time(), dt.UTC)
    selection = Selection(
        stats={"window": {"since": first_day.isoformat(), "days": request.rule.recent_days}}
    )
    if FAR_FROM_TRAINING in request.kinds and request.far_threshold is None:
        raise InputError(
            "far-from-training needs the production model's far threshold; pass "
            "--far-threshold VALUE",
            field="far_threshold",
        )
    # Which kind took an image (by key and by stored bytes): an image is proposed once.
    taken: dict[str, str] = {}

    def keep(image: StoredImage, kind: str, skipped: Counter[str]) -> bool:
        reason = known.clash(image)
        holder = taken.get(image.image_key) or taken.get(image.content_sha256 or "")
        if reason is None and holder is not None:
            # Two jumping advertisers may share an image: it is a duplicate within the kind.
            reason = "other_kind" if holder != kind else "duplicate"
        if reason is not None:
            skipped[reason] += 1
            return False
        taken[image.image_key] = kind
        if image.content_sha256:
            taken[image.content_sha256] = kind
        return True

    limit = request.limit
    if FIX_RATE_JUMP in request.kinds:
        jumps = fix_rate_jumps(session, request.rule, today)
        skipped: Counter[str] = Counter()
        queues: list[list[StoredImage]] = []
        considered = 0
        for jump in jumps:

            def page(offset: int, adv: str = jump.advertiser_id) -> list[StoredImage]:
                return candidate_repo.unfixed_images_of(
                    session, adv, since, limit=limit, offset=offset
                )

            images, seen = _draw(page, limit, lambda i: keep(i, FIX_RATE_JUMP, skipped))
            considered += seen
            queues.append(images)
        rates = {j.advertiser_id: j.record() for j in jumps}
        order = _take_turns(queues, limit)
        for rank, image in enumerate(order):
            record = rates[image.advertiser_id]
            extra = {"fix_rate": {"recent": record["recent"], "baseline": record["baseline"]}}
            selection.picks.append(Pick(FIX_RATE_JUMP, rank, image, extra))
        chosen = {image.image_key for image in order}
        for queue in queues:  # drawn but left out by the turns: free for the other kind
            for image in queue:
                if image.image_key not in chosen:
                    taken.pop(image.image_key, None)
                    taken.pop(image.content_sha256 or "", None)
        selection.stats[why(FIX_RATE_JUMP)] = {
            "rule": request.rule.explain(),
            "advertisers": [j.record() for j in jumps],
            "considered": considered,
            "picked": len(order),
            "skipped": dict(skipped),
        }
    if FAR_FROM_TRAINING in request.kinds:
        threshold = request.far_threshold or 0.0
        skipped = Counter()
        images, considered = _draw(
            lambda offset: candidate_repo.far_images(
                session, since, threshold, limit=limit, offset=offset
            ),
            limit,
            lambda image: keep(image, FAR_FROM_TRAINING, skipped),
        )
        for rank, image in enumerate(images):
            selection.picks.append(
                Pick(FAR_FROM_TRAINING, rank, image, {"far_threshold": threshold})
            )
        selection.stats[why(FAR_FROM_TRAINING)] = {
            "far_threshold": threshold,
            "threshold_source": request.threshold_source,
            "considered": considered,
            "picked": len(images),
            "skipped": dict(skipped),
        }
    return selection


def _draw(
    page: Callable[[int], list[StoredImage]], limit: int, keep: Callable[[StoredImage], bool]
) -> tuple[list[StoredImage], int]:
    """Up to ``limit`` kept images from a pool read page by page; and how many were read."""
    kept: list[StoredImage] = []
    offset = 0
    while len(kept) < limit and offset < _MAX_SCAN * limit:
        rows = page(offset)
        offset += len(rows)
        for image in rows:
            if len(kept) < limit and keep(image):
                kept.append(image)
        if len(rows) < limit:
            break
    return kept, offset


def _take_turns(queues: Sequence[list[StoredImage]], limit: int) -> list[StoredImage]:
    """Round-robin over the queues (each in its own order) until ``limit``."""
    out: list[StoredImage] = []
    depth = 0
    while len(out) < limit and any(depth < len(q) for q in queues):
        out.extend(q[depth] for q in queues if depth < len(q))
        depth += 1
    return out[:limit]


def candidate_suspicion(rank: int, limit: int) -> float:
    """Suspicion of the ``rank``-th (0-based) candidate of a kind: ``2 - (rank+1)/(limit+1)``.

    Inside the ranking's (1, 2) band of likely label errors; a kind's order is kept and
    the kinds interleave (the first of each kind sit together).
    """
    return round(2.0 - (rank + 1) / (limit + 1), 6)


def checked_candidates(
    selection: Selection,
    outcomes: Mapping[str, FetchOutcome | None],
    same_picture: Callable[[bytes, str | None], bool],
    recolored: Callable[[dict[str, str]], set[str]],
) -> list[Candidate]:
    """The picks whose download still shows the stored image, as build candidates.

    Args:
        selection: The picks; each kind's ``skipped`` gets ``download_failed`` and
            ``changed`` counts.
        outcomes: Per image key, what its download gave (None: no URL).
        same_picture: Whether bytes show the picture of a stored pHash.
        recolored: Of the images whose URL now serves such a copy (stored key -> the
            copy's SHA-256), those whose proposed color does not carry to it
            (:func:`cartag.training.datasets.copies.recolored_copies`).

    Returns:
        Candidates labelled with the model's answer; provenance ``source: candidate``.
    """
    kept: list[tuple[Pick, Fetched]] = []
    copies: dict[str, str] = {}  # stored image key -> SHA-256 of its copy
    for pick in selection.picks:
        image = pick.image
        skipped = selection.stats[why(pick.kind)]["skipped"]
        outcome = outcomes.get(image.image_key)
        if not isinstance(outcome, Fetched):
            skipped["download_failed"] = skipped.get("download_failed", 0) + 1
            continue
        sha = content_sha256(outcome.content)
        if image.content_sha256 and sha != image.content_sha256:
            # Another picture now: the model's answer was for the stored one.
            if not same_picture(outcome.content, image.phash):
                skipped["changed"] = skipped.get("changed", 0) + 1
                continue
            if image.color is not None:
                copies[image.image_key] = sha
        kept.append((pick, outcome))
    no_color = recolored(copies)
    out: list[Candidate] = []
    for pick, outcome in kept:
        image = pick.image
        provenance: dict[str, Any] = {
            "source": SOURCE,
            "why": why(pick.kind),
            "rank": pick.rank,
            "advertiser_id": image.advertiser_id,
            "image_key": image.image_key,
            "url": outcome.url,
            "seen_at": image.seen_at.isoformat(),
            "model_version": image.model_version,
            "confidence": image.confidence,
            "novelty": image.novelty,
            **pick.extra,
        }
        color = image.color
        if image.image_key in no_color:
            provenance["color_dropped"] = {"proposed": color, "reason": "recolored_copy"}
            color = None
        out.append(Candidate(outcome.content, image.image_type, color, provenance))
    return out


def is_candidate(provenance: dict[str, Any]) -> bool:
    return provenance.get("source") == SOURCE


def filter_candidates(
    review: Sequence[Candidate],
    existing: Sequence[Existing],
    *,
    min_side: int,
    max_pixels: int,
    max_distance: int,
    stats: dict[str, Any],
) -> list[Checked]:
    """Run the build's filters on the candidates, after every other image was judged.

    ``existing`` holds the parent's items and the build's other new images. What the
    filters would change on those is dropped: a model's proposal never relabels or
    flags an image a person labelled. A candidate that is the same bytes as one of them
    is merged away; a readable one that survives is ``flagged`` (reason ``candidate``, or
    ``conflict`` when a near-duplicate carries other labels: the reviewer sees both).

    Args:
        review: The candidates (:func:`checked_candidates`).
        existing: Items the version already holds.
        min_side: As for the other images.
        max_pixels: As for the other images.
        max_distance: As for the other images.
        stats: The selection's stats; each kind's ``skipped`` gets the filters' reasons.

    Returns:
        One verdict per distinct candidate (excluded ones are kept, like excluded fixes).
    """
    outcome = apply_filters(
        review, existing, min_side=min_side, max_pixels=max_pixels, max_distance=max_distance
    )
    left = Counter(str(c.provenance.get("why")) for c in review)
    for checked in outcome.checked:
        kind = str(checked.candidate.provenance.get("why"))
        left[kind] -= 1
        if checked.status == EXCLUDED:
            skipped = stats[kind]["skipped"]
            skipped[str(checked.reason)] = skipped.get(str(checked.reason), 0) + 1
        else:
            checked.status, checked.reason = FLAGGED, checked.reason or REASON
    for kind, merged_away in left.items():
        if merged_away:
            skipped = stats[kind]["skipped"]
            skipped["duplicate"] = skipped.get("duplicate", 0) + merged_away
    return outcome.checked
