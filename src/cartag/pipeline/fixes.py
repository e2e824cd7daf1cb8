"""Manual fixes as a use case: the precedence rule, applying a fix, the current answer.

Resolution order, field by field: this advertiser's override, then the global fix,
then (color only) the scraper's color, then the model's answer adapted to this
advertiser's fixes (:mod:`cartag.pipeline.adaptation`), then the model; a Placeholder
never has a color. :func:`decide` is that rule, used by classify answers (:func:`resolve`) and by
the audit trail of :func:`apply_fix` alike. A fix is found by the image's key, or by
its perceptual hash, so a re-uploaded identical photo under a new URL keeps its fix
(:func:`find_fixes`). The SQL lives in :mod:`cartag.store.fixes`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Protocol

import numpy as np
from sqlalchemy.orm import Session

from cartag.clock import Clock
from cartag.errors import InputError, NotFoundError
from cartag.pipeline.adaptation import Adapt, Adapted
from cartag.pipeline.results import ClassifyResult, Source, overall_source
from cartag.settings import DEFAULT_LOW_CONFIDENCE_THRESHOLD
from cartag.store import fixes as fix_repo
from cartag.store import images as image_repo
from cartag.store import monitoring as monitoring_repo
from cartag.store.db import Database
from cartag.store.tables import FixAuditRow, FixRow
from cartag.telemetry import Telemetry
from cartag.vocab import read_stored_color


@dataclass(frozen=True)
class FixLabels:
    """The manual labels that apply to one image for one advertiser.

    Attributes:
        override: This advertiser's fix, found by key or pHash.
        global_fix: The global fix, found by key or pHash.
        colorless: Ids of the fixes above whose color does not carry to this image:
            found through the pHash only, on an image the model answered another color
            than the fixed one (a recoloured copy of the same shot, not a re-upload).
    """

    override: FixRow | None
    global_fix: FixRow | None
    colorless: frozenset[int] = frozenset()


@dataclass(frozen=True)
class Decided:
    """An image's labels after the precedence rule, with where each came from."""

    image_type: str | None
    type_source: Source
    color: str | None
    color_source: Source | None


def decide(
    image_type: tuple[str | None, Source],
    color: tuple[str | None, Source],
    labels: FixLabels | None,
) -> Decided:
    """The precedence rule: advertiser override > global fix > what was there before.

    Args:
        image_type: The type before fixes, with its source (the model's, or the cache's).
        color: The color before fixes, with its source (the model's or the scraper's).
        labels: The fixes that apply, if any.

    Returns:
        The labels field by field; a Placeholder has no color (and no color source).
    """
    (type_value, type_source), (color_value, color_source) = image_type, color
    if labels is not None:
        layers: tuple[tuple[FixRow | None, Source], ...] = (
            (labels.global_fix, "fix"),
            (labels.override, "override"),
        )
        for fix, source in layers:
            if fix is None:
                continue
            if fix.image_type is not None:
                type_value, type_source = fix.image_type, source
            if fix.color is not None and fix.id not in labels.colorless:
                color_value, color_source = fix.color, source
    if type_value == "Placeholder":
        return Decided(type_value, type_source, None, None)
    return Decided(type_value, type_source, color_value, color_source)


class StoredAnswer(Protocol):
    """What resolving needs of a stored image: an ImageRow, or a cached lookup of one."""

    @property
    def image_key(self) -> str: ...
    @property
    def image_type(self) -> str | None: ...
    @property
    def color(self) -> str | None: ...
    @property
    def confidence(self) -> float | None: ...
    @property
    def model_version(self) -> str | None: ...
    @property
    def color_reason(self) -> str | None: ...


def resolve(
    row: StoredAnswer,
    labels: FixLabels | None,
    scrape_color: str | None,
    url: str,
    fresh: bool,
    *,
    low_confidence_threshold: float = DEFAULT_LOW_CONFIDENCE_THRESHOLD,
    novelty: float | None = None,
    adapted: Adapted | None = None,
) -> ClassifyResult:
    """Combine the model's answer, the fixes and the scraper's color into one result.

    Field by field by :func:`decide`: the fixes, then the scraper's color, then the
    model's answer adapted to this advertiser's fixes (``adapted``, source
    ``advertiser_model``), then the model's. ``low_confidence`` is set when the model
    (not a person, nor the advertiser's adapter) decided the type and its stored
    confidence is below ``low_confidence_threshold``.
    """
    base: Source = "model" if fresh else "cache"
    image_type: tuple[str | None, Source] = (row.image_type, base)
    color: tuple[str | None, Source] = (read_stored_color(row.color), base)
    if adapted is not None and adapted.image_type is not None:
        image_type = (adapted.image_type, "advertiser_model")
    if adapted is not None and adapted.color is not None:
        color = (adapted.color, "advertiser_model")
    if scrape_color is not None:
        color = (scrape_color, "scrape")
    decided = decide(image_type, color, labels)
    low_confidence = (
        decided.type_source == base
        and row.confidence is not None
        and row.confidence < low_confidence_threshold
    )
    # The stored reason explains only the machine's own null color.
    machine_null = decided.color is None and decided.color_source == base
    return ClassifyResult(
        url=url,
        image_key=row.image_key,
        status="classified" if fresh else "cached",
        image_type=decided.image_type,
        color=decided.color,
        source=overall_source(decided.type_source, decided.color_source),
        type_source=decided.type_source,
        color_source=decided.color_source,
        confidence=row.confidence,
        model_version=row.model_version,
        color_reason=row.color_reason if machine_null else None,
        low_confidence=low_confidence,
        novelty=novelty,
    )


def find_fixes(
    session: Session,
    advertiser_id: str,
    images: Sequence[tuple[str, str | None]],
    *,
    max_distance: int = 0,
) -> dict[str, FixLabels]:
    """The fixes that apply to each image for this advertiser.

    Args:
        session: Any session.
        advertiser_id: Whose overrides count.
        images: ``(image_key, phash)`` pairs.
        max_distance: Also take the fix of an image whose pHash is at most this
            many bits away (a re-encoded or resized copy); 0 = identical pHash only.

    Returns:
        Image key -> its override and global fix; images with neither are absent.
        A fix recorded on the key itself wins over one found through the pHash;
        among pHash matches the nearest wins, then the latest. The pHash is taken in
        grey, so the same render of a car in two colours matches too: a fix found
        through it carries its color only to an image the model answered the same
        color as the fixed one (:attr:`FixLabels.colorless`).
    """
    if not images:
        return {}
    max_distance = min(max_distance, fix_repo.MAX_PHASH_DISTANCE)
    scopes = (advertiser_id, "")
    rows = fix_repo.candidate_fixes(session, ["", advertiser_id], images, max_distance=max_distance)
    if not rows:
        return {}
    by_key: dict[tuple[str, str], FixRow] = {}
    for row in rows:
        by_key[(row.image_key, row.scope_key)] = row
    nearest = _nearest(rows, scopes, [ph for _, ph in images], max_distance)
    # Only the images with a fix on their key or a pHash match can have labels; in a
    # listing most have neither (45,000 of 50,000 in benchmarks.find_fixes).
    keyed = {key for key, _ in by_key}
    hits = {i for i, (key, _) in enumerate(images) if key in keyed}
    for chosen in nearest.values():
        hits.update(np.flatnonzero(chosen >= 0).tolist())
    found: dict[str, FixLabels] = {}
    by_phash: dict[str, list[FixRow]] = {}  # image key -> colored fixes found by pHash
    for i in sorted(hits):  # in the images' order: a key given twice keeps its last labels
        key, ph = images[i]
        labels: list[FixRow | None] = []
        for scope in scopes:
            fix = by_key.get((key, scope))
            if fix is None and ph:
                at = int(nearest[scope][i])
                fix = rows[at] if at >= 0 else None
                if fix is not None and fix.color is not None:
                    by_phash.setdefault(key, []).append(fix)
            labels.append(fix)
        if labels[0] is not None or labels[1] is not None:
            found[key] = FixLabels(override=labels[0], global_fix=labels[1])
    for key, colorless in _recolored(session, by_phash).items():
        found[key] = replace(found[key], colorless=colorless)
    return found


def _recolored(session: Session, by_phash: dict[str, list[FixRow]]) -> dict[str, frozenset[int]]:
    """Image key -> ids of its pHash-found fixes made on an image the model saw in
    another color (one read of the images involved; none when nothing was found)."""
    if not by_phash:
        return {}
    keys = set(by_phash) | {fix.image_key for fixes in by_phash.values() for fix in fixes}
    colors = {key: row.color for key, row in image_repo.get_images(session, keys).items()}
    out: dict[str, frozenset[int]] = {}
    for key, fixes in by_phash.items():
        own = colors.get(key)
        ids = frozenset(
            fix.id
            for fix in fixes
            if own is not None and colors.get(fix.image_key) not in (None, own)
        )
        if ids:
            out[key] = ids
    return out


# Bits set in each 16-bit value: a Hamming distance is the sum over a XOR's four bands
# (numpy >= 1.26 has no popcount of its own; bitwise_count came in 2.0).
_BITS = (
    np.unpackbits(np.arange(1 << 16, dtype=np.uint16).view(np.uint8))
    .reshape(-1, 16)
    .sum(axis=1, dtype=np.uint8)
)
# Candidate pairs (image, fix) looked at in one go: bounds the memory of a listing whose
# images share bands with many fixes (a placeholder card fixed again and again).
_PAIRS = 1 << 20
# Up to this many (image, fix) pairs every pair is compared, without the band join.
_ALL_PAIRS = 1 << 12


def _nearest(
    rows: Sequence[FixRow],
    scopes: Sequence[str],
    phashes: Sequence[str | None],
    max_distance: int,
) -> dict[str, np.ndarray]:
    """For each image and scope, the candidate fix whose pHash is nearest, if close enough.

    The rule of the per-image search it replaces, vectorised: among the rows of the
    scope with a 64-bit pHash at most ``max_distance`` bits from the image's (the
    distance of :func:`cartag.imaging.keys.hamming`), the nearest wins, then the latest,
    i.e. the one last in ``rows`` (:func:`cartag.store.fixes.candidate_fixes` gives each
    row once, in time order).

    Args:
        rows: The candidate fixes, ``r`` of them, oldest first.
        scopes: Scope keys to search (``""``: global fixes).
        phashes: The images' pHashes, ``n`` of them (None or not 64-bit: no match).
        max_distance: Bits the pHashes may differ by, at most
            :data:`cartag.store.fixes.MAX_PHASH_DISTANCE` (negative: no match).

    Returns:
        Scope key -> int64 array of shape ``(n,)``: the winning fix's index in ``rows``,
        or -1 where none is close enough.
    """
    out = {scope: np.full(len(phashes), -1, dtype=np.int64) for scope in scopes}
    if max_distance < 0 or not rows:
        return out
    values, valid = fix_repo.phash_values(phashes)
    # One search per distinct pHash: a listing repeats some (re-uploads, placeholders).
    wanted, inverse = np.unique(values[valid], return_inverse=True)
    fix_values, fix_valid = fix_repo.phash_values([row.phash for row in rows])
    fix_scopes = np.array([row.scope_key for row in rows], dtype=object)
    for scope in set(scopes):
        mine = np.flatnonzero(fix_valid & (fix_scopes == scope))
        if not len(mine) or not len(wanted):
            continue
        best = _nearest_in(wanted, fix_values[mine], mine, len(rows), max_distance)
        out[scope][valid] = best[inverse]
    return out


def _nearest_in(
    wanted: np.ndarray, hashes: np.ndarray, order: np.ndarray, count: int, max_distance: int
) -> np.ndarray:
    """The nearest of ``hashes``, then the one latest in ``rows``, for each wanted pHash.

    Args:
        wanted: uint64 pHashes searched for, shape ``(w,)``.
        hashes: uint64 pHashes of one scope's fixes, shape ``(f,)``.
        order: Their indexes in ``rows``, int64, shape ``(f,)``.
        count: How many rows there are (``r``).
        max_distance: 0-3 bits.

    Returns:
        int64 array of shape ``(w,)``: the index in ``rows`` of the winner, or -1.
    """
    sentinel = np.iinfo(np.int64).max
    if len(wanted) * len(hashes) <= _ALL_PAIRS:
        # A classify's few images: every pair at once takes fewer numpy calls than the
        # join below (whose fixed cost made a one-image classify 0.3 ms slower).
        xor = wanted[:, None] ^ hashes[None, :]
        distance = _BITS[xor.view(np.uint16)].reshape(*xor.shape, 4).sum(axis=2, dtype=np.int64)
        # Nearest first, then the latest: one key to minimise per image.
        key = np.where(distance <= max_distance, distance * count + (count - 1 - order), sentinel)
        return _winners(key.min(axis=1), count, sentinel)
    # Of identical fix pHashes only the latest can win (same distance to any image).
    hashes, order = hashes[::-1], order[::-1]
    hashes, first = np.unique(hashes, return_index=True)
    order = order[first]
    # Pigeonhole: a pHash at most d bits away equals this one on at least 4 - d of its
    # four 16-bit bands, so on one of any d + 1 of them: only those are joined.
    best = np.full(len(wanted), sentinel, dtype=np.int64)
    for band in range(max_distance + 1):
        fix_band = fix_repo.band_of(hashes, band)
        by_band = np.argsort(fix_band, kind="stable")
        sorted_band = fix_band[by_band]
        image_band = fix_repo.band_of(wanted, band)
        lo = np.searchsorted(sorted_band, image_band, side="left")
        hi = np.searchsorted(sorted_band, image_band, side="right")
        sizes = hi - lo
        ends = np.cumsum(sizes)
        start = 0
        while start < len(wanted):
            # As many images as keep the pairs under _PAIRS (at least one).
            base = int(ends[start - 1]) if start else 0
            stop = max(start + 1, int(np.searchsorted(ends, base + _PAIRS, side="right")))
            chunk = np.arange(start, stop)
            n = sizes[chunk]
            image = np.repeat(chunk, n)
            offsets = np.arange(len(image)) - np.repeat(np.cumsum(n) - n, n)
            fix = by_band[np.repeat(lo[chunk], n) + offsets]
            xor = wanted[image] ^ hashes[fix]
            distance = _BITS[xor.view(np.uint16)].reshape(-1, 4).sum(axis=1, dtype=np.int64)
            close = distance <= max_distance
            # Nearest first, then the latest: one key to minimise per image.
            key = distance[close] * count + (count - 1 - order[fix[close]])
            np.minimum.at(best, image[close], key)
            start = stop
    return _winners(best, count, sentinel)


def _winners(best: np.ndarray, count: int, sentinel: int) -> np.ndarray:
    """Indexes in ``rows`` from the minimised keys, shape ``(w,)`` (-1: none close)."""
    found = best != sentinel
    winner = np.full(len(best), -1, dtype=np.int64)
    winner[found] = count - 1 - best[found] % count
    return winner


# Who decided an image's type, for messages.
_SAID_BY: dict[str, str] = {
    "model": "the model says so",
    "fix": "a global fix says so",
    "override": "this advertiser's override says so",
}


@dataclass(frozen=True)
class Author:
    """Who makes a fix: an API key (a browser: its session's key).

    Attributes:
        user: The key's name, recorded as the audit's ``user``.
        key_id: The key's id (None: a caller without a key, e.g. a test or a script).
        on_behalf_of: Free text: the person a panel acts for, recorded as said.
    """

    user: str
    key_id: int | None = None
    on_behalf_of: str | None = None


def apply_fix(
    session: Session,
    *,
    image_key: str,
    advertiser_id: str,
    author: Author,
    scope: str,
    image_type: str | None,
    color: str | None,
    comment: str | None,
    clock: Clock,
) -> FixAuditRow:
    """Record a manual fix and its audit entry in the caller's write transaction.

    Concurrent fixes of one image are serialised on the image row, so each audit
    entry's "from" is exactly the previous fix's "to". The time is read from ``clock``
    once the row is locked: a time taken before would order concurrent fixes by when
    they were sent rather than when they took effect, and the history could end with a
    fix that is not the one in effect.

    Raises:
        NotFoundError: No image has this key.
        InputError: Neither image_type nor color is given, the scope is unknown, or a
            color is given for an image that is (or becomes) a Placeholder in this
            scope: a Placeholder has no color, so the color would never be answered.
    """
    if scope not in (fix_repo.GLOBAL, fix_repo.ADVERTISER):
        raise InputError("scope must be 'global' or 'advertiser'", field="scope")
    if image_type is None and color is None:
        raise InputError("give image_type, color or both", field="image_type")
    if image_type == "Placeholder" and color is not None:
        raise InputError(
            "a Placeholder has no color: send image_type Placeholder without a color",
            field="color",
        )
    image = fix_repo.lock_image(session, image_key)
    if image is None:
        raise NotFoundError(
            f"no image with key {image_key!r}; use the image_key of a classify result"
        )
    now = clock.now()
    rows = fix_repo.fixes_of(session, image_key, ["", advertiser_id])
    key = fix_repo.scope_key(scope, advertiser_id)
    current = rows.get(key)
    override = rows.get(advertiser_id) if advertiser_id else None
    before = decide(
        (image.image_type, "model"),
        (read_stored_color(image.color), "model"),
        FixLabels(override if scope == fix_repo.ADVERTISER else None, rows.get("")),
    )
    if color is not None and image_type is None and before.image_type == "Placeholder":
        said = _SAID_BY.get(before.type_source, before.type_source)
        raise InputError(
            f"image {image_key!r} is a Placeholder here ({said}), which has no color: fix "
            "its image_type too (e.g. Dealer) to give it a color",
            field="color",
        )
    new_type = image_type if image_type is not None else (current.image_type if current else None)
    new_color = color if color is not None else (current.color if current else None)
    if image_type == "Placeholder":
        # A placeholder has no vehicle, so a color kept from an older fix would be wrong.
        new_color = None
    fix_repo.save_fix(
        session,
        image=image,
        scope=scope,
        scope_key=key,
        image_type=new_type,
        color=new_color,
        user=author.user,
        now=now,
    )
    changes: dict[str, dict[str, str | None]] = {}
    if image_type is not None:
        changes["image_type"] = {"from": before.image_type, "to": image_type}
    if color is not None or image_type == "Placeholder":
        changes["color"] = {"from": before.color, "to": new_color}
    return fix_repo.add_audit(
        session,
        image_key=image_key,
        advertiser_id=advertiser_id,
        scope=scope,
        user=author.user,
        changes=changes,
        comment=comment,
        now=now,
        key_id=author.key_id,
        on_behalf_of=author.on_behalf_of,
        model_version=image.model_version,
    )


def current_answer(
    db: Database,
    advertiser_id: str,
    image_key: str,
    *,
    max_distance: int = 0,
    low_confidence_threshold: float = DEFAULT_LOW_CONFIDENCE_THRESHOLD,
    adapt: Adapt | None = None,
) -> ClassifyResult:
    """What a classify would answer now for a stored image, for this advertiser.

    ``adapt``: the serving answers adapted to the advertiser's fixes
    (:meth:`cartag.pipeline.classify.ClassifyService.adapted`); None: none.

    Raises:
        NotFoundError: No image has this key.
    """
    with db.read() as session:
        row = image_repo.get_images(session, [image_key]).get(image_key)
        if row is None:
            raise NotFoundError(f"no image with key {image_key!r}")
        labels = find_fixes(
            session, advertiser_id, [(image_key, row.phash)], max_distance=max_distance
        )
        adapted = adapt(session, advertiser_id, [image_key]) if adapt else {}
    return resolve(
        row,
        labels.get(image_key),
        None,
        row.url,
        fresh=False,
        low_confidence_threshold=low_confidence_threshold,
        adapted=adapted.get(image_key),
    )


def fix_image(
    db: Database,
    clock: Clock,
    telemetry: Telemetry,
    *,
    image_key: str,
    advertiser_id: str,
    author: Author,
    scope: str,
    image_type: str | None,
    color: str | None,
    comment: str | None,
    max_distance: int = 0,
    low_confidence_threshold: float = DEFAULT_LOW_CONFIDENCE_THRESHOLD,
    adapt: Adapt | None = None,
) -> tuple[FixAuditRow, ClassifyResult]:
    """Apply a fix in its own transaction, count it (the request, and the image once a day
    in its advertiser's name), and answer as a classify now would.

    Returns:
        The audit entry (detached; the store keeps objects loaded on commit) and the
        image's current answer for ``advertiser_id``.

    Raises:
        NotFoundError: No image has this key.
        InputError: See :func:`apply_fix`.
    """
    with db.write() as session:
        audit = apply_fix(
            session,
            image_key=image_key,
            advertiser_id=advertiser_id,
            author=author,
            scope=scope,
            image_type=image_type,
            color=color,
            comment=comment,
            clock=clock,
        )
        # The request is counted; the fixed image only once a day, as the fix rate is.
        first_today = monitoring_repo.first_fix_of_day(session, audit)
    telemetry.fix_applied(advertiser_id, scope)
    if first_today:
        telemetry.image_fixed(advertiser_id)
    answer = current_answer(
        db,
        advertiser_id,
        image_key,
        max_distance=max_distance,
        low_confidence_threshold=low_confidence_threshold,
        adapt=adapt,
    )
    return audit, answer
