"""Repository functions for the model registry: versions, aliases and their history.

The registry has three tables: ``model_versions`` (one row per registered model
folder), ``model_aliases`` (``production`` / ``candidate`` -> a version) and
``model_deployments`` (the history: which version an alias pointed to, from when
to when, and why). Servers poll :func:`alias_version` (one primary-key read).
Registration, the load check, promotion and rollback live in :mod:`cartag.deploy`;
per-advertiser settings in :mod:`cartag.store.advertisers`.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterable
from typing import Any, Final

from sqlalchemy import func, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from cartag.errors import ConflictError, InputError, NotFoundError
from cartag.store.tables import DeploymentRow, ModelAliasRow, ModelVersionRow

PRODUCTION: Final[str] = "production"
CANDIDATE: Final[str] = "candidate"
ALIASES: Final[tuple[str, ...]] = (PRODUCTION, CANDIDATE)
# Not an alias anyone points: the last version a server or worker loaded as production,
# kept in the alias table so that a server that cannot load production serves it
# rather than the bundled model. Never listed with the aliases, never in the history.
LAST_LOADED: Final[str] = "last-loaded"

REGISTERED: Final[str] = "registered"
REFUSED: Final[str] = "refused"
ARCHIVED: Final[str] = "archived"


def check_alias(alias: str) -> str:
    """Return ``alias`` if it is a known alias name.

    Raises:
        InputError: Otherwise.
    """
    if alias not in ALIASES:
        raise InputError(f"unknown alias {alias!r}; use one of {', '.join(ALIASES)}", "alias")
    return alias


# --- versions --------------------------------------------------------------------


def find_version(session: Session, version: str) -> ModelVersionRow | None:
    """The registered row of ``version``, or None."""
    return session.get(ModelVersionRow, version)


def get_version(session: Session, version: str) -> ModelVersionRow:
    """The row of ``version``.

    Raises:
        NotFoundError: No model has this version.
    """
    row = find_version(session, version)
    if row is None:
        raise NotFoundError(
            f"no model version {version!r} is registered; `cartag models list` shows them"
        )
    return row


def list_versions(session: Session) -> list[ModelVersionRow]:
    """Every registered model, newest first."""
    stmt = select(ModelVersionRow).order_by(
        ModelVersionRow.created_at.desc(), ModelVersionRow.version
    )
    return list(session.scalars(stmt))


def count_versions(session: Session) -> int:
    return int(session.scalar(select(func.count()).select_from(ModelVersionRow)) or 0)


def add_version(
    session: Session,
    *,
    version: str,
    path: str,
    files_sha256: str,
    status: str,
    card: dict[str, Any],
    metrics: dict[str, Any],
    dataset_ref: str | None,
    created_by: str,
    now: dt.datetime,
) -> ModelVersionRow:
    """Insert a version row, or replace a refused one with the same version."""
    row = find_version(session, version)
    if row is None:
        row = ModelVersionRow(version=version, created_at=now)
        session.add(row)
    row.path = path
    row.files_sha256 = files_sha256
    row.status = status
    row.card = card
    row.metrics = metrics
    row.dataset_ref = dataset_ref
    row.created_by = created_by
    session.flush()
    return row


def set_status(session: Session, version: str, status: str, reason: str | None = None) -> None:
    """Change a version's status; ``reason`` is kept in its card as ``status_reason``."""
    row = get_version(session, version)
    row.status = status
    if reason is not None:
        row.card = {**row.card, "status_reason": reason}


def merge_metrics(session: Session, version: str, metrics: dict[str, Any]) -> ModelVersionRow:
    """Merge evaluation sets into a version's metrics (a set given again replaces the old)."""
    row = get_version(session, version)
    # A new dict, so the JSON column is seen as changed; round-tripped so it is plain JSON.
    row.metrics = {**row.metrics, **json.loads(json.dumps(metrics))}
    return row


# --- aliases and history ------------------------------------------------------------


def alias_version(session: Session, alias: str) -> str | None:
    """The version an alias points to: the cheap read servers poll."""
    return session.scalar(select(ModelAliasRow.version).where(ModelAliasRow.alias == alias))


def get_alias(session: Session, alias: str) -> ModelVersionRow | None:
    """The model an alias points to, or None when the alias is not set."""
    version = alias_version(session, alias)
    return None if version is None else find_version(session, version)


def aliases_by_version(session: Session) -> dict[str, list[str]]:
    """Version -> the aliases pointing at it."""
    found: dict[str, list[str]] = {}
    stmt = (
        select(ModelAliasRow).where(ModelAliasRow.alias.in_(ALIASES)).order_by(ModelAliasRow.alias)
    )
    for row in session.scalars(stmt):
        found.setdefault(row.version, []).append(row.alias)
    return found


def record_last_loaded(session: Session, version: str, *, by: str, now: dt.datetime) -> None:
    """Remember ``version`` as the last production model that loaded (see :data:`LAST_LOADED`)."""
    row = _lock_or_create_alias(session, LAST_LOADED, version, by=by, now=now)
    if row is not None and row.version != version:
        row.version, row.updated_at, row.updated_by = version, now, by


def lock_alias(session: Session, alias: str) -> None:
    """Lock an alias's row (if it exists) for the rest of the transaction.

    A promotion or rollback decides from the alias and its history (the gates compare
    with production, a rollback's target is read from the history), so it takes the
    lock before reading them: otherwise a promotion committed meanwhile was compared
    against the production it replaced, or silently undone by a rollback computed from
    the history before it. SQLite serializes writers anyway (``BEGIN IMMEDIATE``).
    """
    session.get(ModelAliasRow, alias, with_for_update=True, populate_existing=True)


def alias_version_locked(session: Session, alias: str) -> str | None:
    """The version an alias points to, share-locked for the rest of the transaction.

    A writer that must only write while the alias still names a version (a
    re-classification saving that version's answers) reads it with this in the same
    transaction as its write: on PostgreSQL a promotion or rollback (which locks the row
    for update in :func:`point_alias`) then waits for that write to commit, and the write
    waits for a move in progress and sees where it landed; writers sharing the lock do
    not wait for each other. SQLite serializes writers anyway (``BEGIN IMMEDIATE``).
    """
    row = session.get(ModelAliasRow, alias, with_for_update={"read": True}, populate_existing=True)
    return None if row is None else row.version


def _lock_or_create_alias(
    session: Session, alias: str, version: str, *, by: str, now: dt.datetime
) -> ModelAliasRow | None:
    """The alias's row, locked for the rest of the transaction; None: it was just created
    pointing at ``version``.

    Inserted if absent first: a row that does not exist cannot be locked, so two
    processes setting a new alias at once both inserted it and the second failed on
    the duplicate (PostgreSQL). Now the second waits for the first and sees its row.
    """
    module: Any = postgresql if session.get_bind().dialect.name == "postgresql" else sqlite
    created = session.execute(
        module.insert(ModelAliasRow)
        .values(alias=alias, version=version, updated_at=now, updated_by=by)
        .on_conflict_do_nothing(index_elements=["alias"])
        .returning(ModelAliasRow.alias)
    ).first()
    if created is not None:
        return None
    return session.get(ModelAliasRow, alias, with_for_update=True, populate_existing=True)


def history(session: Session, alias: str) -> list[DeploymentRow]:
    """Every deployment of an alias, oldest first (the last one is current)."""
    stmt = (
        select(DeploymentRow)
        .where(DeploymentRow.alias == alias)
        .order_by(DeploymentRow.started_at, DeploymentRow.id)
    )
    return list(session.scalars(stmt))


def point_alias(
    session: Session, alias: str, version: str, *, by: str, reason: str, now: dt.datetime
) -> DeploymentRow:
    """Point ``alias`` at ``version``, closing the current deployment row and opening one.

    Raises:
        ConflictError: The alias already points at this version.
    """
    current = _lock_or_create_alias(session, alias, version, by=by, now=now)
    if current is not None and current.version == version:
        raise ConflictError(f"{alias} already serves {version}; nothing to do")
    session.execute(
        update(DeploymentRow)
        .where(DeploymentRow.alias == alias, DeploymentRow.ended_at.is_(None))
        .values(ended_at=now)
    )
    if current is not None:
        current.version = version
        current.updated_at = now
        current.updated_by = by
    deployment = DeploymentRow(
        alias=alias, version=version, started_at=now, ended_at=None, by=by, reason=reason
    )
    session.add(deployment)
    session.flush()
    return deployment


def rollback_target(deployments: Iterable[DeploymentRow]) -> str | None:
    """The version a rollback returns to, replaying the history as a stack.

    A promotion (or the initial deployment) pushes its version, a rollback pops one, so
    promoting B then C and rolling back twice returns to B then to the version before B.

    Returns:
        The version below the current one, or None when there is none.
    """
    stack: list[str] = []
    for row in deployments:
        if row.reason == "rollback":
            if stack:
                stack.pop()
            # The row records where the rollback landed, which is now on top.
            if not stack or stack[-1] != row.version:
                stack.append(row.version)
        else:
            stack.append(row.version)
    return stack[-2] if len(stack) >= 2 else None
