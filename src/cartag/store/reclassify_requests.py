"""Repository functions for re-classification requests (``reclassify_requests``).

A request is written before its run starts and closed when a run of its model finishes
it or production moves on, so one cut off part-way (a server stopped, a Ctrl-C) stays
open: :func:`incomplete` is what ``/healthz`` and ``cartag models list`` report, a server
of production takes over one whose run went silent (:func:`oldest_stopped`,
:func:`take_over`), and a run of production's model over the same advertisers closes it
(:func:`finish`). Running
the re-classification is :mod:`cartag.jobs.reclassify`.
"""

from __future__ import annotations

import datetime as dt
from typing import Final

from sqlalchemy import ColumnElement, Select, func, or_, select, update
from sqlalchemy.orm import Session

from cartag.store.model_versions import PRODUCTION
from cartag.store.tables import ModelAliasRow, ReclassifyRequestRow

DONE: Final[str] = "done"
SUPERSEDED: Final[str] = "superseded"
# The one advertiser it was asked for no longer takes re-classifications after promotions.
WITHDRAWN: Final[str] = "withdrawn"


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


def beat(session: Session, request_id: int, now: dt.datetime) -> bool:
    """A run of the request is alive (between its chunks' saves, which may take minutes);
    False when the request is closed (nothing left to beat on)."""
    result = session.execute(
        update(ReclassifyRequestRow)
        .where(ReclassifyRequestRow.id == request_id, ReclassifyRequestRow.finished_at.is_(None))
        .values(progress_at=now)
    )
    return int(getattr(result, "rowcount", 0) or 0) == 1


def _alive() -> ColumnElement[dt.datetime]:
    """A request's last sign of life: its run's last save or beat, else when it was asked."""
    return func.coalesce(ReclassifyRequestRow.progress_at, ReclassifyRequestRow.requested_at)


def oldest_stopped(
    session: Session, version: str, stale_before: dt.datetime
) -> ReclassifyRequestRow | None:
    """The oldest open request of ``version``, the production model, whose run stopped:
    no save nor beat since ``stale_before`` (no run at all: asked for before it)."""
    stmt = _open_of_production().where(
        ReclassifyRequestRow.version == version, _alive() < stale_before
    )
    return session.scalars(stmt.limit(1)).first()


def take_over(
    session: Session, request_id: int, *, now: dt.datetime, stale_before: dt.datetime
) -> bool:
    """Take over a request whose run stopped (:func:`oldest_stopped`), if it still is.

    A compare-and-set on its sign of life, so of several servers finding the same
    request one gets it: its ``progress_at`` becomes ``now``, and the taker's run keeps
    it fresh (:func:`beat`).

    Returns:
        Whether this session took it.
    """
    taken = session.execute(
        update(ReclassifyRequestRow)
        .where(
            ReclassifyRequestRow.id == request_id,
            ReclassifyRequestRow.finished_at.is_(None),
            _alive() < stale_before,
        )
        .values(progress_at=now)
        .execution_options(synchronize_session=False)
    )
    return int(getattr(taken, "rowcount", 0) or 0) == 1


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
    return list(session.scalars(_open_of_production()))


def _open_of_production() -> Select[ReclassifyRequestRow]:
    """The open requests of the model production names now, oldest first."""
    return (
        select(ReclassifyRequestRow)
        .join(ModelAliasRow, ModelAliasRow.version == ReclassifyRequestRow.version)
        .where(ModelAliasRow.alias == PRODUCTION, ReclassifyRequestRow.finished_at.is_(None))
        .order_by(ReclassifyRequestRow.requested_at, ReclassifyRequestRow.id)
    )
