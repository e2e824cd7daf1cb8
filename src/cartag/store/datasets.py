"""Repository functions for versioned datasets: drafts, items, freezing, manifests.

A dataset version is named ``NAME@NUMBER`` (``cars@3``). It starts as a *draft*
whose items may still change (filters, ranking, review decisions); freezing it
writes the SHA-256 of its canonical manifest and makes it immutable: every
write function here refuses a frozen version with :class:`ConflictError`.

The canonical manifest is the version's identity: JSON with sorted keys, items
sorted by content hash, no timestamps of its own freezing, so the same content
always hashes the same (see :func:`manifest`).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Final

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from cartag.errors import ConflictError, InputError, NotFoundError
from cartag.store.tables import (
    DatasetItemRow,
    DatasetVersionRow,
    FixAuditRow,
    FixRow,
    ImageRow,
    ModelAliasRow,
    ModelVersionRow,
    UrlRow,
)
from cartag.store.upsert import chunked

MANIFEST_FORMAT: Final[str] = "cartag-dataset/1"
DRAFT: Final[str] = "draft"
FROZEN: Final[str] = "frozen"
INCLUDED: Final[str] = "included"
EXCLUDED: Final[str] = "excluded"
FLAGGED: Final[str] = "flagged"
ITEM_STATUSES: Final[tuple[str, ...]] = (INCLUDED, EXCLUDED, FLAGGED)
# Columns a draft's items may change after they were added (ranking, review, split).
_MUTABLE: Final[frozenset[str]] = frozenset(
    {
        "image_type",
        "color",
        "split",
        "group_key",
        "status",
        "reason",
        "provenance",
        "suspicion",
        "model_label",
        "model_confidence",
    }
)
# Numbers tried by create_version when concurrent builds of one dataset take them first.
_CREATE_ATTEMPTS: Final[int] = 5
_NAME = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,63}$")
_REF = re.compile(r"^(?P<name>[^@\s]+)@(?P<number>[0-9]{1,9})$")


def check_name(name: str) -> str:
    """A dataset name: 1-64 of lowercase letters, digits, ``_ . -`` (starts alphanumeric).

    Raises:
        InputError: The name does not fit.
    """
    if not _NAME.fullmatch(name):
        raise InputError(
            f"dataset name {name!r} must be 1-64 lowercase letters, digits, '_', '.' or '-', "
            "starting with a letter or digit (e.g. cars)",
            field="name",
        )
    return name


def parse_ref(ref: str) -> tuple[str, int]:
    """Split ``NAME@NUMBER`` into its parts.

    Raises:
        InputError: ``ref`` is not of that form.
    """
    match = _REF.fullmatch(ref.strip())
    if match is None:
        raise InputError(
            f"{ref!r} is not a dataset version; write NAME@NUMBER (e.g. cars@2) or NAME "
            "for its latest version",
            field="ref",
        )
    return check_name(match["name"]), int(match["number"])


@dataclass(frozen=True)
class NewItem:
    """One image to add to a draft version (see :class:`DatasetItemRow` for the fields)."""

    content_sha256: str
    blob_path: str
    image_type: str | None
    color: str | None
    status: str = INCLUDED
    reason: str | None = None
    provenance: dict[str, Any] = field(default_factory=dict)
    split: str | None = None
    group_key: str | None = None
    phash: str | None = None
    width: int | None = None
    height: int | None = None
    suspicion: float | None = None
    model_label: str | None = None
    model_confidence: float | None = None


def resolve_ref(session: Session, ref: str) -> str:
    """``NAME@N`` as given (checked), or ``NAME`` -> its latest version's ref.

    Raises:
        InputError: Malformed ref.
        NotFoundError: No such dataset or version.
    """
    ref = ref.strip()
    if "@" not in ref:
        name = check_name(ref)
        number = session.scalar(
            select(func.max(DatasetVersionRow.number)).where(DatasetVersionRow.name == name)
        )
        if number is None:
            raise NotFoundError(f"no dataset named {name!r}; `cartag dataset list` shows them")
        return f"{name}@{number}"
    parse_ref(ref)
    return ref


def get_version(session: Session, ref: str) -> DatasetVersionRow:
    """The version ``ref`` (``NAME@N`` or ``NAME`` for the latest).

    Raises:
        NotFoundError: No such version.
    """
    resolved = resolve_ref(session, ref)
    row = session.get(DatasetVersionRow, resolved)
    if row is None:
        raise NotFoundError(
            f"no dataset version {resolved!r}; `cartag dataset list` shows the versions"
        )
    return row


def require_draft(session: Session, ref: str) -> DatasetVersionRow:
    """The version, locked for update, if it is still a draft.

    Raises:
        NotFoundError: No such version.
        ConflictError: The version is frozen (immutable).
    """
    resolved = resolve_ref(session, ref)
    row = session.scalars(
        select(DatasetVersionRow).where(DatasetVersionRow.ref == resolved).with_for_update()
    ).one_or_none()
    if row is None:
        raise NotFoundError(f"no dataset version {resolved!r}")
    if row.status != DRAFT:
        raise ConflictError(
            f"dataset version {row.ref} is frozen and cannot change; create a new version "
            f"from it (cartag dataset create {row.name} --from {row.ref})"
        )
    return row


def create_version(
    session: Session,
    name: str,
    *,
    created_by: str,
    now: dt.datetime,
    parent_ref: str | None = None,
    fixes_since: dt.datetime | None = None,
    test_sets: Sequence[Mapping[str, Any]] = (),
    notes: str | None = None,
) -> DatasetVersionRow:
    """Create the next draft version ``NAME@N`` (N = last number + 1, from 1).

    Raises:
        InputError: Bad name.
        NotFoundError: ``parent_ref`` does not exist.
        ConflictError: Concurrent builds of the dataset kept taking the next number.
    """
    check_name(name)
    if parent_ref is not None:
        parent_ref = get_version(session, parent_ref).ref
    for _ in range(_CREATE_ATTEMPTS):
        last = session.scalar(
            select(func.max(DatasetVersionRow.number)).where(DatasetVersionRow.name == name)
        )
        number = (last or 0) + 1
        row = DatasetVersionRow(
            ref=f"{name}@{number}",
            name=name,
            number=number,
            parent_ref=parent_ref,
            status=DRAFT,
            created_at=now,
            created_by=created_by,
            frozen_at=None,
            fixes_since=fixes_since,
            manifest_sha256=None,
            stats={},
            test_sets=[dict(t) for t in test_sets],
            notes=notes,
        )
        try:
            # A savepoint: on PostgreSQL another build of this dataset may have taken
            # the number since it was read; the next read sees that one committed.
            with session.begin_nested():
                session.add(row)
        except IntegrityError:
            continue
        return row
    raise ConflictError(
        f"other versions of dataset {name!r} were being created at the same time; "
        "run the command again"
    )


def add_items(session: Session, ref: str, items: Sequence[NewItem]) -> int:
    """Add items to a draft version.

    Returns:
        How many were added.

    Raises:
        ConflictError: The version is frozen, or an item's content hash is already in it.
        InputError: An item has an unknown status.
    """
    version = require_draft(session, ref)
    existing = {
        sha
        for chunk in chunked({i.content_sha256 for i in items})
        for sha in session.scalars(
            select(DatasetItemRow.content_sha256).where(
                DatasetItemRow.version_ref == version.ref,
                DatasetItemRow.content_sha256.in_(chunk),
            )
        )
    }
    seen: set[str] = set()
    for item in items:
        if item.status not in ITEM_STATUSES:
            raise InputError(f"item status must be one of {', '.join(ITEM_STATUSES)}")
        if item.content_sha256 in existing or item.content_sha256 in seen:
            raise ConflictError(f"{version.ref} already holds image {item.content_sha256[:12]}")
        seen.add(item.content_sha256)
    session.add_all(DatasetItemRow(version_ref=version.ref, **asdict(item)) for item in items)
    session.flush()
    return len(items)


def update_items(session: Session, ref: str, changes: Mapping[int, Mapping[str, Any]]) -> None:
    """Change fields of items of a draft version: ``{item_id: {column: value}}``.

    Raises:
        ConflictError: The version is frozen.
        InputError: A column may not change (content, blob, hashes, sizes).
        NotFoundError: An item id is not in this version.
    """
    version = require_draft(session, ref)
    rows: dict[int, DatasetItemRow] = {}
    for chunk in chunked(changes):
        for row in session.scalars(
            select(DatasetItemRow).where(
                DatasetItemRow.version_ref == version.ref, DatasetItemRow.id.in_(chunk)
            )
        ):
            rows[row.id] = row
    for item_id, values in changes.items():
        bad = set(values) - _MUTABLE
        if bad:
            raise InputError(f"dataset item fields {sorted(bad)} cannot change")
        found = rows.get(item_id)
        if found is None:
            raise NotFoundError(f"item {item_id} is not in {version.ref}")
        for column, value in values.items():
            setattr(found, column, value)
    session.flush()


def set_stats(session: Session, ref: str, stats: Mapping[str, Any]) -> None:
    """Replace a draft version's stats (filter counts, class balance, ranking summary).

    Raises:
        ConflictError: The version is frozen.
    """
    require_draft(session, ref).stats = dict(stats)
    session.flush()


def list_versions(session: Session, name: str | None = None) -> list[DatasetVersionRow]:
    """Versions, by name then number."""
    stmt = select(DatasetVersionRow).order_by(DatasetVersionRow.name, DatasetVersionRow.number)
    if name is not None:
        stmt = stmt.where(DatasetVersionRow.name == check_name(name))
    return list(session.scalars(stmt))


def item_counts(session: Session, refs: Sequence[str]) -> dict[str, dict[str, int]]:
    """``{ref: {status: count}}`` for the given versions."""
    counts: dict[str, dict[str, int]] = {ref: {} for ref in refs}
    stmt = (
        select(DatasetItemRow.version_ref, DatasetItemRow.status, func.count())
        .where(DatasetItemRow.version_ref.in_(list(refs)))
        .group_by(DatasetItemRow.version_ref, DatasetItemRow.status)
    )
    for ref, status, n in session.execute(stmt):
        counts[ref][status] = int(n)
    return counts


def list_items(
    session: Session,
    ref: str,
    *,
    status: str | None = None,
    order: str = "id",
    limit: int | None = None,
    offset: int = 0,
) -> list[DatasetItemRow]:
    """Items of a version.

    Args:
        session: Any session.
        ref: The version.
        status: Only items with this status.
        order: ``id`` (insertion order), ``suspicion`` (most suspicious first,
            unscored last) or ``content`` (by content SHA-256).
        limit: At most this many.
        offset: Skip this many first.

    Raises:
        NotFoundError: No such version.
        InputError: Unknown order or status.
    """
    version = get_version(session, ref)
    stmt = select(DatasetItemRow).where(DatasetItemRow.version_ref == version.ref)
    if status is not None:
        if status not in ITEM_STATUSES:
            raise InputError(f"status must be one of {', '.join(ITEM_STATUSES)}", field="status")
        stmt = stmt.where(DatasetItemRow.status == status)
    if order == "suspicion":
        stmt = stmt.order_by(
            DatasetItemRow.suspicion.is_(None), DatasetItemRow.suspicion.desc(), DatasetItemRow.id
        )
    elif order == "id":
        stmt = stmt.order_by(DatasetItemRow.id)
    elif order == "content":
        stmt = stmt.order_by(DatasetItemRow.content_sha256)
    else:
        raise InputError("order must be 'id' or 'suspicion'", field="order")
    stmt = stmt.offset(offset)
    if limit is not None:
        stmt = stmt.limit(limit)
    return list(session.scalars(stmt))


def _item_record(row: DatasetItemRow) -> dict[str, Any]:
    def rounded(value: float | None) -> float | None:
        # Rounded so that backends storing float4/float8 give the same manifest.
        return None if value is None else round(float(value), 6)

    return {
        "content_sha256": row.content_sha256,
        "blob_path": row.blob_path,
        "image_type": row.image_type,
        "color": row.color,
        "split": row.split,
        "group_key": row.group_key,
        "phash": row.phash,
        "width": row.width,
        "height": row.height,
        "status": row.status,
        "reason": row.reason,
        "provenance": row.provenance,
        "suspicion": rounded(row.suspicion),
        "model_label": row.model_label,
        "model_confidence": rounded(row.model_confidence),
    }


def manifest(session: Session, ref: str) -> dict[str, Any]:
    """The canonical manifest of a version (what its SHA-256 covers).

    Returns:
        ``{"format", "ref", "parent", "created_at", "created_by", "fixes_since",
        "test_sets", "items": [...]}`` with items sorted by content hash.
    """
    version = get_version(session, ref)
    rows = session.scalars(
        select(DatasetItemRow)
        .where(DatasetItemRow.version_ref == version.ref)
        .order_by(DatasetItemRow.content_sha256)
    )
    return {
        "format": MANIFEST_FORMAT,
        "ref": version.ref,
        "parent": version.parent_ref,
        "created_at": version.created_at.isoformat(),
        "created_by": version.created_by,
        "fixes_since": version.fixes_since.isoformat() if version.fixes_since else None,
        "test_sets": version.test_sets,
        "items": [_item_record(row) for row in rows],
    }


def canonical_json(document: Mapping[str, Any]) -> bytes:
    """Deterministic JSON bytes: sorted keys, no whitespace, UTF-8."""
    return json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def manifest_sha256(document: Mapping[str, Any]) -> str:
    """SHA-256 hex of :func:`canonical_json` of a manifest."""
    return hashlib.sha256(canonical_json(document)).hexdigest()


def freeze(session: Session, ref: str, now: dt.datetime) -> DatasetVersionRow:
    """Freeze a draft: compute and store its manifest hash; it never changes again.

    Raises:
        ConflictError: Already frozen, or nothing in it could be trained on.
        NotFoundError: No such version.
    """
    version = require_draft(session, ref)
    labelled = session.scalar(
        select(func.count())
        .select_from(DatasetItemRow)
        .where(
            DatasetItemRow.version_ref == version.ref,
            DatasetItemRow.status == INCLUDED,
            (DatasetItemRow.image_type.is_not(None)) | (DatasetItemRow.color.is_not(None)),
        )
    )
    if not labelled:
        # A frozen version never changes: frozen empty, it could only be deleted.
        raise ConflictError(
            f"dataset version {version.ref} has no included item with a type or color label, "
            "so nothing in it could be trained on; label its items first (folder names or "
            f"--labels at import, or the review page /review/{version.ref})"
        )
    version.manifest_sha256 = manifest_sha256(manifest(session, version.ref))
    version.status = FROZEN
    version.frozen_at = now
    session.flush()
    return version


def export_manifest(session: Session, ref: str) -> dict[str, Any]:
    """The manifest plus ``manifest_sha256`` (None for a draft) and ``stats``.

    ``manifest_sha256`` is the hash of the manifest without these two keys.
    """
    version = get_version(session, ref)
    document = manifest(session, version.ref)
    return {**document, "manifest_sha256": version.manifest_sha256, "stats": version.stats}


def last_retrain(session: Session) -> dt.datetime | None:
    """When the production model's data was made.

    The ``created_at`` of the dataset version named by the production alias's
    ``model_versions.dataset_ref``; None when there is no production alias, it
    names no dataset, or the dataset is not in this store.
    """
    dataset_ref = session.scalar(
        select(ModelVersionRow.dataset_ref)
        .join(ModelAliasRow, ModelAliasRow.version == ModelVersionRow.version)
        .where(ModelAliasRow.alias == "production")
    )
    if not dataset_ref:
        return None
    version = session.get(DatasetVersionRow, dataset_ref)
    return version.created_at if version is not None else None


@dataclass(frozen=True)
class FixedImage:
    """A manual fix (global, or one advertiser's override) made after a cutoff.

    Attributes:
        image_key: The fixed image.
        scope: ``global`` or ``advertiser``.
        advertiser_id: The override's advertiser; for a global fix, the advertiser
            whose request made it (from the audit), or None.
        image_type: The fixed type (an override's missing field is taken from the
            global fix of the image, if any), or None.
        color: The fixed color, likewise.
        urls: Where the image can be downloaded: its own URL first, then other
            URLs last seen serving it.
        content_sha256: SHA-256 of the bytes that were fixed (None if unknown).
        phash: pHash of the fixed image (None if unknown).
        fix_audit_id: The latest audit entry of this fix.
        user: Who made that entry.
        fixed_at: When the fix was last changed.
    """

    image_key: str
    scope: str
    advertiser_id: str | None
    image_type: str | None
    color: str | None
    urls: list[str]
    content_sha256: str | None
    phash: str | None
    fix_audit_id: int | None
    user: str
    fixed_at: dt.datetime


def fixed_images_since(session: Session, since: dt.datetime | None) -> list[FixedImage]:
    """Every fix changed after ``since`` (all fixes for None), oldest first."""
    stmt = select(FixRow).order_by(FixRow.updated_at, FixRow.id)
    if since is not None:
        stmt = stmt.where(FixRow.updated_at > since)
    fixes = list(session.scalars(stmt))
    keys = sorted({f.image_key for f in fixes})
    images: dict[str, ImageRow] = {}
    urls: dict[str, list[str]] = {}
    global_fix: dict[str, FixRow] = {}
    audits: dict[str, list[FixAuditRow]] = {}
    for chunk in chunked(keys):
        for image in session.scalars(select(ImageRow).where(ImageRow.image_key.in_(chunk))):
            images[image.image_key] = image
        for url in session.scalars(
            select(UrlRow).where(UrlRow.image_key.in_(chunk)).order_by(UrlRow.checked_at.desc())
        ):
            urls.setdefault(url.image_key, []).append(url.url)
        for fix in session.scalars(
            select(FixRow).where(FixRow.image_key.in_(chunk), FixRow.scope_key == "")
        ):
            global_fix[fix.image_key] = fix
        for audit in session.scalars(
            select(FixAuditRow)
            .where(FixAuditRow.image_key.in_(chunk))
            .order_by(FixAuditRow.created_at, FixAuditRow.id)
        ):
            audits.setdefault(audit.image_key, []).append(audit)
    found = []
    for fix in fixes:
        image = images[fix.image_key]
        trail = [
            a
            for a in audits.get(fix.image_key, [])
            if a.scope == fix.scope and (fix.scope_key == "" or a.advertiser_id == fix.scope_key)
        ]
        last = trail[-1] if trail else None
        base = global_fix.get(fix.image_key) if fix.scope_key else None
        image_type = fix.image_type or (base.image_type if base else None)
        color = fix.color or (base.color if base else None)
        if image_type == "Placeholder":
            color = None
        own = [image.url] if image.url else []
        found.append(
            FixedImage(
                image_key=fix.image_key,
                scope=fix.scope,
                advertiser_id=fix.scope_key or (last.advertiser_id if last else None) or None,
                image_type=image_type,
                color=color,
                urls=list(dict.fromkeys(own + urls.get(fix.image_key, []))),
                content_sha256=image.content_sha256,
                phash=image.phash,
                fix_audit_id=last.id if last else None,
                user=last.user if last else fix.updated_by,
                fixed_at=fix.updated_at,
            )
        )
    return found
