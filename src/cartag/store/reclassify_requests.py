"""Repository functions for re-classification requests (``reclassify_requests``).

A request is written before its run starts and closed when a run of its model finishes
it or production moves on, so one cut off part-way (a server stopped, a Ctrl-C) stays
open: :func:`incomplete` is what ``/healthz`` and ``cartag models list`` report, and a
run of production's model over the same advertisers closes it (:func:`finish`). Running
the re-classification is :mod:`cartag.jobs.reclassify`.
"""

from __future__ import annotations

import datetime as dt
from typing import Final

from sqlalchemy import or_, select, update
from sqlalchemy.orm import Session

from cartag.store.model_versions import PRODUCTION
from cartag.store.tables import ModelAliasRow, ReclassifyRequestRow

DONE: Final[str] = "done"
SUPERSEDED: Final[str] = "superseded"


def open_request(
    session: Session, version: str, advertiser_id: str | None, *, by: str, now: dt.datetime
) -> ReclassifyRequestRow:
    """Record a re-classification with ``version`` (the production model) as asked for.

    The open requests of other models are closed as superseded: only production's
    answers are ever saved, and this request's run gives them.

    Args:
        session: The caller's write session.
        version: The model whose answers are due.
        advertiser_id: One advertiser; None for every one that opted in.
        by: Who asked (a key's name, a user, ``host:pid``).
        now: The time of the request.
    """
    session.execute(
        update(ReclassifyRequestRow)
        .where(ReclassifyRequestRow.finished_at.is_(None), ReclassifyRequestRow.version != version)
        .values(finished_at=now, outcome=SUPERSEDED)
    )
    row = ReclassifyRequestRow(
        version=version,
        advertiser_id=advertiser_id,
        requested_at=now,
        requested_by=by[:128],
    )
    session.add(row)
    session.flush()
    return row


def note_progress(session: Session, request_id: int, now: dt.datetime) -> None:
    """A run of the request saved a chunk of answers."""
    session.execute(
        update(ReclassifyRequestRow)
        .where(ReclassifyRequestRow.id == request_id)
        .values(progress_at=now, error=None)
    )


def note_error(session: Session, request_id: int, error: str) -> None:
    """A run of the request failed; it stays open."""
    session.execute(
        update(ReclassifyRequestRow)
        .where(ReclassifyRequestRow.id == request_id)
        .values(error=error)
    )


def finish(
    session: Session,
    request_id: int,
    outcome: str,
    *,
    now: dt.datetime,
    version: str,
    advertiser_id: str | None,
) -> None:
    """Close a request; a run that is ``done`` also closes the open requests it covers.

    Those are the requests of the same model for the same advertiser, or for any
    advertiser when the run covered every one that opted in: the earlier run they
    recorded was cut off, and this one gave their images the model's answers.
    """
    closed = ReclassifyRequestRow.id == request_id
    if outcome == DONE:
        covered = ReclassifyRequestRow.finished_at.is_(None) & (
            ReclassifyRequestRow.version == version
        )
        if advertiser_id is not None:
            covered &= ReclassifyRequestRow.advertiser_id == advertiser_id
        closed = or_(closed, covered)
    session.execute(
        update(ReclassifyRequestRow)
        .where(closed, ReclassifyRequestRow.finished_at.is_(None))
        .values(finished_at=now, outcome=outcome)
    )


def incomplete(session: Session) -> list[ReclassifyRequestRow]:
    """The open requests of the model production names now, oldest first.

    Those of another model are not incomplete: production moved on, and its answers
    are the only ones a re-classification may save.
    """
    stmt = (
        select(ReclassifyRequestRow)
        .join(ModelAliasRow, ModelAliasRow.version == ReclassifyRequestRow.version)
        .where(ModelAliasRow.alias == PRODUCTION, ReclassifyRequestRow.finished_at.is_(None))
        .order_by(ReclassifyRequestRow.requested_at, ReclassifyRequestRow.id)
    )
    return list(session.scalars(stmt))
