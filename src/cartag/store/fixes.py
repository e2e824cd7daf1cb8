"""Repository functions for manual fixes: apply (audited), resolve, history, conflicts.

Resolution order, field by field: this advertiser's override, then the global
fix, then the model. A fix is found by the image's key, or by its perceptual
hash, so a re-uploaded identical photo under a new URL keeps its fix.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import func, or_, select
from sqlalchemy.orm import Session

from cartag.clock import Clock
from cartag.errors import InputError, NotFoundError
from cartag.store.tables import FixAuditRow, FixRow, ImageRow
from cartag.store.upsert import chunked, in_values, upsert
from cartag.vocab import read_stored_color

# Near-duplicate search is exact up to this many differing bits (see FixRow.phash_b0).
MAX_PHASH_DISTANCE = 3
GLOBAL = "global"
ADVERTISER = "advertiser"
FIELDS = ("image_type", "color")


@dataclass(frozen=True)
class FixLabels:
    """The manual labels that apply to one image for one advertiser."""

    override: FixRow | None
    global_fix: FixRow | None


def phash_bands(phash: str | None) -> list[int | None]:
    """The four 16-bit quarters of a 64-bit hex pHash (None for a missing hash)."""
    if not phash or len(phash) != 16:
        return [None] * 4
    return [int(phash[i : i + 4], 16) for i in range(0, 16, 4)]


def _distance(a: str, b: str) -> int:
    return (int(a, 16) ^ int(b, 16)).bit_count()


def scope_key(scope: str, advertiser_id: str) -> str:
    return "" if scope == GLOBAL else advertiser_id


def _effective(
    image: ImageRow, override: FixRow | None, global_fix: FixRow | None
) -> dict[str, str | None]:
    values: dict[str, str | None] = {
        "image_type": image.image_type,
        "color": read_stored_color(image.color),
    }
    for fix in (global_fix, override):
        if fix is None:
            continue
        if fix.image_type is not None:
            values["image_type"] = fix.image_type
        if fix.color is not None:
            values["color"] = fix.color
    if values["image_type"] == "Placeholder":
        values["color"] = None
    return values


def apply_fix(
    session: Session,
    *,
    image_key: str,
    advertiser_id: str,
    user: str,
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
        InputError: Neither image_type nor color is given, or the scope is unknown.
    """
    if scope not in (GLOBAL, ADVERTISER):
        raise InputError("scope must be 'global' or 'advertiser'", field="scope")
    if image_type is None and color is None:
        raise InputError("give image_type, color or both", field="image_type")
    image = session.scalars(
        select(ImageRow).where(ImageRow.image_key == image_key).with_for_update()
    ).one_or_none()
    if image is None:
        raise NotFoundError(
            f"no image with key {image_key!r}; use the image_key of a classify result"
        )
    now = clock.now()
    rows = {
        row.scope_key: row
        for row in session.scalars(
            select(FixRow).where(
                FixRow.image_key == image_key, FixRow.scope_key.in_(["", advertiser_id])
            )
        )
    }
    key = scope_key(scope, advertiser_id)
    current = rows.get(key)
    override = rows.get(advertiser_id) if advertiser_id else None
    before = _effective(image, override if scope == ADVERTISER else None, rows.get(""))

    new_type = image_type if image_type is not None else (current.image_type if current else None)
    new_color = color if color is not None else (current.color if current else None)
    if image_type == "Placeholder":
        # A placeholder has no vehicle, so a color kept from an older fix would be wrong.
        new_color = None
    upsert(
        session,
        FixRow,
        {
            "image_key": image_key,
            "scope": scope,
            "scope_key": key,
            "phash": image.phash,
            **{f"phash_b{i}": band for i, band in enumerate(phash_bands(image.phash))},
            "image_type": new_type,
            "color": new_color,
            "updated_by": user,
            "updated_at": now,
        },
        index_elements=["image_key", "scope_key"],
    )
    changes: dict[str, dict[str, str | None]] = {}
    if image_type is not None:
        changes["image_type"] = {"from": before["image_type"], "to": image_type}
    if color is not None or image_type == "Placeholder":
        changes["color"] = {"from": before["color"], "to": new_color}
    audit = FixAuditRow(
        image_key=image_key,
        advertiser_id=advertiser_id,
        scope=scope,
        user=user,
        changes=changes,
        comment=comment,
        created_at=now,
    )
    session.add(audit)
    session.flush()
    return audit


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
        among pHash matches the nearest wins, then the latest.
    """
    if not images:
        return {}
    max_distance = min(max_distance, MAX_PHASH_DISTANCE)
    by_key: dict[tuple[str, str], FixRow] = {}
    near: list[FixRow] = []
    scopes = ["", advertiser_id]
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
        stmt = (
            select(FixRow)
            .where(or_(*conditions), FixRow.scope_key.in_(scopes))
            .order_by(FixRow.updated_at)
        )
        for row in session.scalars(stmt):
            by_key[(row.image_key, row.scope_key)] = row
            if row.phash:
                near.append(row)
    found: dict[str, FixLabels] = {}
    for key, ph in images:
        labels: list[FixRow | None] = []
        for scope in (advertiser_id, ""):
            fix = by_key.get((key, scope))
            if fix is None and ph:
                candidates = [
                    (_distance(ph, row.phash), -i, row)
                    for i, row in enumerate(near)
                    if row.scope_key == scope and row.phash
                ]
                close = [c for c in candidates if c[0] <= max_distance]
                if close:
                    fix = min(close, key=lambda c: (c[0], c[1]))[2]
            labels.append(fix)
        if labels[0] is not None or labels[1] is not None:
            found[key] = FixLabels(override=labels[0], global_fix=labels[1])
    return found


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
