"""Promotion and rollback: which version an alias (``production``, ``candidate``) names.

Every change is a row in the deployment history (:mod:`cartag.store.model_versions`).
:func:`promote` runs the promotion gates (:mod:`cartag.gates`) unless forced,
and always the load check (:mod:`cartag.deploy.loadcheck`); :func:`rollback` returns
to the version before; :func:`point_candidate` is how a sweep names its best trial.
What a promotion is followed by (the hot swap, re-classification) is
:mod:`cartag.deploy.followup`; the API, the CLI and sweeps all call these functions.
"""

from __future__ import annotations

import logging

from sqlalchemy.orm import Session

from cartag.clock import Clock
from cartag.deploy.loadcheck import load_registered
from cartag.errors import ConflictError, ModelError, ModelUnloadableError
from cartag.gates import PromotionGatedError, check_promotion
from cartag.models.classifier import Classifier
from cartag.settings import Settings
from cartag.store import model_versions as repo
from cartag.store.db import Database
from cartag.store.model_versions import CANDIDATE, PRODUCTION, REGISTERED, get_alias, history
from cartag.store.tables import DeploymentRow, ModelVersionRow

log = logging.getLogger(__name__)


def promote(
    db: Database,
    settings: Settings,
    version: str,
    *,
    by: str,
    clock: Clock,
    alias: str = PRODUCTION,
    force: bool = False,
    reuse: Classifier | None = None,
) -> DeploymentRow:
    """Point an alias at a version, after the promotion gates unless ``force``.

    The gates (:func:`cartag.gates.check_promotion`) compare the version's
    metrics with production's on the sets both have. When production has metrics,
    the candidate must share at least one set with it. Then the version's files are
    load-checked as at registration (:func:`load_registered`: hash, load, smoke check),
    ``force`` or not: files damaged since registration would make every server refuse
    the version, and a restarted one serve another model.

    Args:
        db: The store.
        settings: Gate tolerances and the loading settings.
        version: A registered version.
        by: Who promotes.
        clock: Time source.
        alias: The alias to move.
        force: Skip the gates (never the load check).
        reuse: A loaded model whose backbone the load check may share (a server's).

    Returns:
        The new deployment-history row (reason ``promote``).

    Raises:
        NotFoundError: Unknown version.
        ConflictError: The version is refused/archived or already holds the alias.
        PromotionGatedError: A gate fails (a :class:`ConflictError`).
        ModelUnloadableError: Its files no longer load (a :class:`ConflictError`).
    """
    repo.check_alias(alias)
    with db.read() as session:
        row = repo.get_version(session, version)
        _check_promotable(session, settings, row, alias=alias, force=force)
    # Outside any write transaction: loading takes a while and must not hold the lock.
    try:
        load_registered(settings, row, reuse=reuse)
    except ModelError as exc:
        log.error("promotion of %s refused: %s", version, exc.message)
        raise ModelUnloadableError(
            f"model {version} cannot be promoted: {exc.message}. {alias} is unchanged"
        ) from exc
    with db.write() as session:
        # Checked again, under the alias's lock: another promotion or rollback may have
        # happened during the load, and one committed after this check must wait for us.
        repo.lock_alias(session, alias)
        row = repo.get_version(session, version)
        _check_promotable(session, settings, row, alias=alias, force=force)
        return repo.point_alias(session, alias, version, by=by, reason="promote", now=clock.now())


def _check_promotable(
    session: Session, settings: Settings, row: ModelVersionRow, *, alias: str, force: bool
) -> None:
    """Raise unless ``row`` may take ``alias``: its status, the alias, the gates."""
    version = row.version
    if row.status != REGISTERED:
        raise ConflictError(
            f"model {version} is {row.status}"
            + (f" ({row.card['status_reason']})" if row.card.get("status_reason") else "")
            + "; register a working model under a new version"
        )
    if repo.alias_version(session, alias) == version:
        raise ConflictError(f"{alias} already serves {version}; nothing to do")
    production = get_alias(session, PRODUCTION)
    if not force and production is not None and production.version != version:
        failures = check_promotion(row.metrics, production.metrics, settings)
        if production.metrics and not set(row.metrics) & set(production.metrics):
            failures.append(
                f"{version} has no evaluation set in common with {production.version} "
                f"(it has {sorted(row.metrics) or 'none'}); evaluate both on the same set"
            )
        if failures:
            raise PromotionGatedError(version, failures)


def rollback(
    db: Database,
    settings: Settings,
    *,
    by: str,
    clock: Clock,
    alias: str = PRODUCTION,
    reuse: Classifier | None = None,
) -> DeploymentRow:
    """Point an alias back at the version it had before its current one (no gates).

    The version rolled back to is load-checked first, as a promotion's is
    (:func:`load_registered`): a rollback is what an operator reaches for when the
    serving model misbehaves, and one onto files damaged since registration would leave
    every server on the model rolled back from while the registry says otherwise.

    Args:
        db: The store.
        settings: The loading settings.
        by: Who rolls back.
        clock: Time source.
        alias: The alias to move.
        reuse: A loaded model whose backbone the load check may share (a server's).

    Returns:
        The new deployment-history row (reason ``rollback``).

    Raises:
        ConflictError: The alias has no earlier version, or that one no longer can serve,
            or the alias kept moving while the rollback load-checked its target.
        ModelUnloadableError: The earlier version's files no longer load (a
            :class:`ConflictError`); the alias does not move.
    """
    repo.check_alias(alias)
    for _ in range(_ROLLBACK_TRIES):
        with db.read() as session:
            row = _rollback_row(session, alias)
        # Outside any write transaction: loading takes a while and must not hold the lock.
        try:
            load_registered(settings, row, reuse=reuse)
        except ModelError as exc:
            log.error("rollback of %s to %s refused: %s", alias, row.version, exc.message)
            raise ModelUnloadableError(
                f"cannot roll {alias} back to {row.version}: {exc.message}. {alias} is "
                "unchanged; promote a working version instead (`cartag models list`)"
            ) from exc
        with db.write() as session:
            repo.lock_alias(session, alias)  # the target is read from the history: hold it still
            # A promotion or rollback committed during the load changes the target: the
            # one checked is then not the one to return to, so check the new one.
            current = _rollback_row(session, alias)
            if current.version == row.version:
                return repo.point_alias(
                    session, alias, row.version, by=by, reason="rollback", now=clock.now()
                )
    raise ConflictError(
        f"{alias} changed {_ROLLBACK_TRIES} times while the rollback checked its target; "
        "see `cartag models history` and roll back again"
    )


# A rollback whose target moves during its load check checks the new one, this many times.
_ROLLBACK_TRIES = 3


def _rollback_row(session: Session, alias: str) -> ModelVersionRow:
    """The registered version a rollback of ``alias`` returns to.

    Raises:
        ConflictError: There is none, or it is refused or archived.
    """
    target = repo.rollback_target(history(session, alias))
    if target is None:
        raise ConflictError(
            f"{alias} has no earlier version to roll back to; "
            "`cartag models history` shows its deployments"
        )
    row = repo.get_version(session, target)
    if row.status != REGISTERED:
        raise ConflictError(
            f"the previous {alias} version {target} is {row.status}; promote another "
            "version instead"
        )
    return row


def point_candidate(db: Database, version: str, *, by: str, reason: str, clock: Clock) -> None:
    """Point ``candidate`` at ``version`` as is (no gates, no load check); a no-op when it does.

    A sweep names its best trial so; promoting it to production goes through :func:`promote`.
    """
    try:
        with db.write() as session:
            repo.point_alias(session, CANDIDATE, version, by=by, reason=reason, now=clock.now())
    except ConflictError:
        pass  # already the candidate
