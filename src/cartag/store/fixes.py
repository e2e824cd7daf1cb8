"""Repository functions for manual fixes: the rows, their audit trail, candidates, conflicts.

Only the SQL: which fix applies (the precedence rule, the nearest pHash) is decided by
the fix service, :mod:`cartag.pipeline.fixes`.
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from sqlalchemy import func, or_, select
from sqlalchemy.orm import Session

from cartag.errors import NotFoundError
from cartag.store.tables import FixAuditRow, FixRow, ImageRow
from cartag.store.upsert import chunked, in_values, upsert

# Near-duplicate search is exact up to this many differing bits (see FixRow.phash_b0).
MAX_PHASH_DISTANCE = 3
# Scopes holding at most this many fixes are read whole (see candidate_fixes).
FEW_FIXES = 500
GLOBAL = "global"
ADVERTISER = "advertiser"
FIELDS = ("image_type", "color")


def phash_bands(phash: str | None) -> list[int | None]:
    """The four 16-bit quarters of a 64-bit hex pHash (None for a missing hash)."""
    if not phash or len(phash) != 16:
        return [None] * 4
    return [int(phash[i : i + 4], 16) for i in range(0, 16, 4)]


def phash_values(phashes: Sequence[str | None]) -> tuple[np.ndarray, np.ndarray]:
    """64-bit hex pHashes as integers, for searching many at once.

    Args:
        phashes: ``n`` hex pHashes; one that is missing or not 16 characters long has no
            value (as it has no bands, :func:`phash_bands`).

    Returns:
        ``(values, valid)``: uint64 array of shape ``(n,)`` (0 where not valid) and bool
        array of shape ``(n,)``. Band ``i`` of a valid hash is
        ``(value >> (48 - 16 * i)) & 0xFFFF``, as :func:`phash_bands` reads it.

    Raises:
        ValueError: A 16-character pHash that is not hex.
    """
    values = np.fromiter(
        (int(ph, 16) if ph is not None and len(ph) == 16 else 0 for ph in phashes),
        np.uint64,
        len(phashes),
    )
    valid = np.fromiter(
        (ph is not None and len(ph) == 16 for ph in phashes), np.bool_, len(phashes)
    )
    return values, valid


def band_of(values: np.ndarray, band: int) -> np.ndarray:
    """Band ``band`` (0-3, the first four hex digits first) of uint64 pHashes, shape kept."""
    return (values >> np.uint64(48 - 16 * band)) & np.uint64(0xFFFF)


def scope_key(scope: str, advertiser_id: str) -> str:
    return "" if scope == GLOBAL else advertiser_id


def lock_image(session: Session, image_key: str) -> ImageRow | None:
    """The image row, locked for the rest of the transaction (fixes of one image queue up)."""
    return session.scalars(
        select(ImageRow).where(ImageRow.image_key == image_key).with_for_update()
    ).one_or_none()


def fixes_of(session: Session, image_key: str, scope_keys: Sequence[str]) -> dict[str, FixRow]:
    """The fixes recorded on an image's key in these scopes, by scope key."""
    return {
        row.scope_key: row
        for row in session.scalars(
            select(FixRow).where(FixRow.image_key == image_key, FixRow.scope_key.in_(scope_keys))
        )
    }


def save_fix(
    session: Session,
    *,
    image: ImageRow,
    scope: str,
    scope_key: str,
    image_type: str | None,
    color: str | None,
    user: str,
    now: dt.datetime,
) -> None:
    """Insert or replace the fix of ``image`` in one scope (with its pHash bands)."""
    upsert(
        session,
        FixRow,
        {
            "image_key": image.image_key,
            "scope": scope,
            "scope_key": scope_key,
            "phash": image.phash,
            **{f"phash_b{i}": band for i, band in enumerate(phash_bands(image.phash))},
            "image_type": image_type,
            "color": color,
            "updated_by": user,
            "updated_at": now,
        },
        index_elements=["image_key", "scope_key"],
    )


def add_audit(
    session: Session,
    *,
    image_key: str,
    advertiser_id: str,
    scope: str,
    user: str,
    changes: dict[str, dict[str, str | None]],
    comment: str | None,
    now: dt.datetime,
    key_id: int | None = None,
    on_behalf_of: str | None = None,
    model_version: str | None = None,
) -> FixAuditRow:
    """Add an audit entry (flushed: its id is set)."""
    audit = FixAuditRow(
        image_key=image_key,
        advertiser_id=advertiser_id,
        scope=scope,
        user=user,
        changes=changes,
        comment=comment,
        created_at=now,
        key_id=key_id,
        on_behalf_of=on_behalf_of,
        model_version=model_version,
    )
    session.add(audit)
    session.flush()
    return audit


def candidate_fixes(
    session: Session,
    scope_keys: Sequence[str],
    images: Sequence[tuple[str, str | None]],
    *,
    max_distance: int = 0,
) -> list[FixRow]:
    """Fixes in these scopes that may apply to ``images``, oldest first (read per chunk of
    250 images when the scopes hold more fixes than :data:`FEW_FIXES` and than the images).

    A row is a candidate when it is recorded on one of the keys, or (``max_distance``
    0) has one of the pHashes, or (``max_distance`` > 0) shares a 16-bit band with one
    of them: every pHash within ``MAX_PHASH_DISTANCE`` bits does. Which candidate
    applies is the caller's choice (:func:`cartag.pipeline.fixes.find_fixes`).

    Args:
        session: Any session.
        scope_keys: ``""`` (global) and/or advertiser ids.
        images: ``(image_key, phash)`` pairs.
        max_distance: 0 = identical pHashes only; else near ones too.
    """
    in_scope = FixRow.scope_key.in_(list(scope_keys))
    # Every classify asks, and most scopes hold few fixes (often none): then reading
    # them all and choosing here costs less than a thousand images' keys and pHash
    # bands as IN lists (on a re-run, ~5 % of the server's CPU). So does a scope holding
    # fewer fixes than the images asked about (a listing's 50,000 images: 200 queries
    # of IN lists returned some rows many times over, 2.6 s of its 3.6 s).
    whole = max(FEW_FIXES, len(images))
    count = select(func.count()).select_from(
        select(FixRow.id).where(in_scope).limit(whole + 1).subquery()
    )
    held = session.scalar(count) or 0
    if held == 0:
        return []
    if held <= whole:
        rows = session.scalars(
            select(FixRow).where(in_scope).order_by(FixRow.updated_at, FixRow.id)
        )
        return _candidates(list(rows), images, max_distance)
    # A row may match several chunks: kept once, and the whole list put in time order, so
    # "the latest" among tied fixes is the latest fix, not the one whose chunk came last.
    found: dict[int, FixRow] = {}
    for chunk in chunked(images, 250):
        keys = [key for key, _ in chunk]
        phashes = [ph for _, ph in chunk if ph]
        conditions = [in_values(session, FixRow.image_key, keys)]
        if phashes and max_distance == 0:
            conditions.append(in_values(session, FixRow.phash, phashes))
        elif phashes:
            bands = [phash_bands(ph) for ph in phashes]
            columns = (FixRow.phash_b0, FixRow.phash_b1, FixRow.phash_b2, FixRow.phash_b3)
            for i, column in enumerate(columns):
                conditions.append(in_values(session, column, {b[i] for b in bands}))
        stmt = select(FixRow).where(or_(*conditions), in_scope)
        found.update((row.id, row) for row in session.scalars(stmt))
    return sorted(found.values(), key=lambda row: (row.updated_at, row.id))


def _candidates(
    rows: list[FixRow], images: Sequence[tuple[str, str | None]], max_distance: int
) -> list[FixRow]:
    """The rows :func:`candidate_fixes`'s queries would select, in their order."""
    keys = {key for key, _ in images}
    phashes = {ph for _, ph in images if ph}
    if max_distance == 0:
        return [row for row in rows if row.image_key in keys or row.phash in phashes]
    # The bands of every pHash at once: per hash in Python, a listing's 50,000 images
    # spent 0.23 s here.
    values, valid = phash_values(list(phashes))
    values = np.unique(values[valid])
    bands = [set(band_of(values, i).tolist()) for i in range(4)]
    return [
        row
        for row in rows
        if row.image_key in keys
        or row.phash_b0 in bands[0]
        or row.phash_b1 in bands[1]
        or row.phash_b2 in bands[2]
        or row.phash_b3 in bands[3]
    ]


def history(session: Session, image_key: str) -> list[FixAuditRow]:
    """The audit trail of an image in the order the fixes took effect (the last is in effect).

    Ordered by id: fixes of one image are serialised on its row and each gets its id
    inside that lock, so ids follow the commits even where the servers' clocks disagree.

    Raises:
        NotFoundError: No image has this key.
    """
    if session.get(ImageRow, image_key) is None:
        raise NotFoundError(f"no image with key {image_key!r}")
    stmt = select(FixAuditRow).where(FixAuditRow.image_key == image_key).order_by(FixAuditRow.id)
    return list(session.scalars(stmt))


@dataclass(frozen=True)
class Conflict:
    """An image whose manual labels disagree across advertisers/scopes."""

    image: ImageRow
    fixes: list[FixRow]
    fields: list[str]


def conflicts(session: Session, *, limit: int = 100, offset: int = 0) -> tuple[int, list[Conflict]]:
    """Images whose fixes disagree on image_type or color.

    Returns:
        ``(total, page)``: how many conflicting images exist, and one page of them,
        most recently fixed first.
    """
    multi = (
        select(FixRow.image_key, func.max(FixRow.updated_at).label("last"))
        .group_by(FixRow.image_key)
        .having(func.count() > 1)
        .subquery()
    )
    keys = [
        row[0] for row in session.execute(select(multi.c.image_key).order_by(multi.c.last.desc()))
    ]
    rows_by_key: dict[str, list[FixRow]] = defaultdict(list)
    for chunk in chunked(keys):
        for row in session.scalars(select(FixRow).where(FixRow.image_key.in_(chunk))):
            rows_by_key[row.image_key].append(row)
    conflicting: list[tuple[str, list[str]]] = []
    for key in keys:
        fields = [
            field
            for field in FIELDS
            if len({getattr(r, field) for r in rows_by_key[key] if getattr(r, field)}) > 1
        ]
        if fields:
            conflicting.append((key, fields))
    page = conflicting[offset : offset + limit]
    images = {
        row.image_key: row
        for row in session.scalars(
            select(ImageRow).where(ImageRow.image_key.in_([k for k, _ in page]))
        )
    }
    result = [
        Conflict(
            image=images[key],
            fixes=sorted(rows_by_key[key], key=lambda r: r.scope_key),
            fields=fields,
        )
        for key, fields in page
    ]
    return len(conflicting), result


@dataclass(frozen=True)
class FixInName:
    """A fix in effect made in an advertiser's name, with the model's answer it changed.

    Attributes:
        fix_id: The fix row's id (with ``updated_at``, what identifies this version of it).
        image_key: The fixed image.
        scope: ``advertiser`` (its override) or ``global`` (a global fix its audit names).
        image_type: The fixed type (None: not fixed).
        color: The fixed color (None: not fixed).
        updated_at: When the fix was last changed.
        content_sha256: The fixed image's content hash (its embedding's key).
    """

    fix_id: int
    image_key: str
    scope: str
    image_type: str | None
    color: str | None
    updated_at: dt.datetime
    content_sha256: str | None


def fixes_in_name_of(session: Session, advertiser_id: str) -> list[FixInName]:
    """The advertiser's overrides and the global fixes made in its name, by id.

    A global fix is in its name when an audit entry of that image names the advertiser
    with scope ``global`` (whoever changed the fix last).
    """
    if not advertiser_id:
        return []
    named = select(FixAuditRow.image_key).where(
        FixAuditRow.advertiser_id == advertiser_id, FixAuditRow.scope == GLOBAL
    )
    stmt = (
        select(
            FixRow.id,
            FixRow.image_key,
            FixRow.scope,
            FixRow.image_type,
            FixRow.color,
            FixRow.updated_at,
            ImageRow.content_sha256,
        )
        .join(ImageRow, ImageRow.image_key == FixRow.image_key)
        .where(
            or_(
                FixRow.scope_key == advertiser_id,
                (FixRow.scope_key == "") & FixRow.image_key.in_(named),
            )
        )
        .order_by(FixRow.id)
    )
    return [FixInName(*row) for row in session.execute(stmt)]
