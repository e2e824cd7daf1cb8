"""What follows a deployment: does this process serve it, and whose images to re-classify.

After a promotion or rollback of ``production``, servers hot-swap to the version
(:mod:`cartag.deploy.hotswap`) and, where the caller enables it, the images of the
advertisers that opted in are re-classified with it — after a rollback exactly as after
a promotion, so that no answer of the model rolled back from stays. Deploy only says what
should be re-classified (:func:`plan`); running it is
:func:`cartag.jobs.reclassify.reclassify`, which the API starts in the background and the
CLI runs in the foreground. When the caller does not run it, :attr:`Followup.command` is
how to run it later.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from cartag.errors import ConflictError
from cartag.store import advertisers as advertiser_repo
from cartag.store import model_versions as repo
from cartag.store.db import Database
from cartag.store.model_versions import PRODUCTION
from cartag.store.tables import DeploymentRow

# Re-classifies the opted-in advertisers' images with the production model.
RECLASSIFY_COMMAND: Final[str] = "cartag models reclassify"


@dataclass(frozen=True)
class Followup:
    """The re-classification that follows a deployment.

    Attributes:
        version: The version deployed (promoted or rolled back to).
        advertisers: The advertisers that opted in (their images get its answers).
        run: Re-classify them now: a ``production`` deployment, the caller's switch on,
            someone opted in.
    """

    version: str
    advertisers: list[str]
    run: bool

    @property
    def command(self) -> str | None:
        """The command that re-classifies later, when it is due but not run now."""
        return RECLASSIFY_COMMAND if self.advertisers and not self.run else None


def plan(db: Database, deployment: DeploymentRow, enabled: bool) -> Followup:
    """Whose images a promotion or a rollback re-classifies (the same rule for both).

    Args:
        db: The store (who opted in).
        deployment: The deployment just made.
        enabled: The caller's switch (see :func:`reclassify_follows`).
    """
    if deployment.alias != PRODUCTION:
        return Followup(deployment.version, [], run=False)
    advertisers = advertisers_to_run(db, None)
    return Followup(deployment.version, advertisers, run=enabled and bool(advertisers))


def reclassify_follows(deployment: DeploymentRow, enabled: bool) -> bool:
    """Whether a re-classification follows ``deployment``: one of ``production``, if enabled.

    Args:
        deployment: The deployment just made (a promotion or a rollback).
        enabled: The caller's switch: ``settings.reclassify_on_promote`` for the API,
            ``--reclassify/--no-reclassify`` for ``cartag models promote``.
    """
    return deployment.alias == PRODUCTION and enabled


def refusal(db: Database, deployment: DeploymentRow, serving: str) -> str | None:
    """Why this process does not serve the version a ``production`` deployment names.

    Args:
        db: The store (the version's status and the reason it was refused).
        deployment: The deployment just made.
        serving: The version this process serves, after its hot-swap check.

    Returns:
        A readable reason, or None when it serves the version or the alias is not
        ``production``.
    """
    if deployment.alias != PRODUCTION or serving == deployment.version:
        return None
    with db.read() as session:
        row = repo.get_version(session, deployment.version)
    return (
        f"{deployment.version} failed to load here and is {row.status}"
        f" ({row.card.get('status_reason', 'see the server log')}); "
        f"{serving} keeps serving"
    )


def advertisers_to_run(db: Database, advertiser_id: str | None) -> list[str]:
    """The opted-in advertisers a re-classification covers (one, or all that opted in).

    Raises:
        ConflictError: ``advertiser_id`` has not opted in.
    """
    with db.read() as session:
        if advertiser_id is None:
            return advertiser_repo.reclassify_advertisers(session)
        if not advertiser_repo.opted_in(session, advertiser_id):
            raise ConflictError(
                f"advertiser {advertiser_id} has not opted in to re-classification; run "
                f"`cartag advertisers set {advertiser_id} --reclassify-on-promote` first"
            )
    return [advertiser_id]
