"""Repository functions for classify jobs and their items.

A job's items are written with the job; each item's result is stored once
(``WHERE result IS NULL``), so a job resumed after a crash never classifies an
image twice and never loses a finished one.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import delete, func, insert, or_, select, update
from sqlalchemy.orm import Session
from sqlalchemy.sql.elements import ColumnElement

from cartag.errors import ConflictError, NotFoundError
from cartag.store.tables import JobItemRow, JobRow

QUEUED, RUNNING, DONE, FAILED = "queued", "running", "done", "failed"


def create_job(
    session: Session,
    *,
    advertiser_id: str,
    items: Sequence[tuple[str, str | None]],
    callback_url: str | None,
    now: dt.datetime,
    owner_key_id: int | None = None,
    results: Mapping[int, dict[str, Any]] | None = None,
) -> JobRow:
    """Store a job and its ``(url, scrape_color)`` items, queued.

    ``owner_key_id`` is the API key that submitted it (the one that may read it).
    ``results`` are items answered already (by index): stored done, never classified.
    """
    results = results or {}
    job = JobRow(
        id=str(uuid.uuid4()),
        advertiser_id=advertiser_id,
        status=QUEUED,
        total=len(items),
        done=len(results),
        callback_url=callback_url,
        created_at=now,
        owner_key_id=owner_key_id,
    )
    session.add(job)
    session.flush()
    session.execute(
        insert(JobItemRow),
        [
            {
                "job_id": job.id,
                "idx": i,
                "url": url,
                "scrape_color": color,
                "result": results.get(i),
            }
            for i, (url, color) in enumerate(items)
        ],
    )
    return job


def delete_job(session: Session, job_id: str) -> None:
    """Remove a job and its items: one that could not be got going, never answered 202."""
    session.execute(delete(JobItemRow).where(JobItemRow.job_id == job_id))
    session.execute(delete(JobRow).where(JobRow.id == job_id))


def get_job(session: Session, job_id: str) -> JobRow:
    """Raises NotFoundError for an unknown id."""
    job = session.get(JobRow, job_id)
    if job is None:
        raise NotFoundError(f"no job with id {job_id!r}")
    return job


def list_jobs(
    session: Session,
    *,
    owner_key_id: int | None,
    status: str | None = None,
    limit: int = 50,
    offset: int = 0,
) -> tuple[list[JobRow], int]:
    """Jobs newest first, with how many match in all.

    Args:
        session: A read session.
        owner_key_id: Only the jobs this API key submitted; None = every job (admins).
        status: Only jobs in this state.
        limit: At most this many.
        offset: Skip this many first.
    """
    conditions = []
    if owner_key_id is not None:
        conditions.append(JobRow.owner_key_id == owner_key_id)
    if status is not None:
        conditions.append(JobRow.status == status)
    total = session.scalar(select(func.count()).select_from(JobRow).where(*conditions)) or 0
    rows = session.scalars(
        select(JobRow)
        .where(*conditions)
        .order_by(JobRow.created_at.desc(), JobRow.id)
        .limit(limit)
        .offset(offset)
    )
    return list(rows), int(total)


def job_results(session: Session, job_id: str) -> list[dict[str, Any] | None]:
    """Item results in request order (None where not done yet)."""
    stmt = select(JobItemRow.result).where(JobItemRow.job_id == job_id).order_by(JobItemRow.idx)
    return list(session.scalars(stmt))


def claim_next_job(session: Session, now: dt.datetime) -> JobRow | None:
    """Take a queued job and mark it running (skips jobs locked by other workers).

    Jobs that have not started come first, oldest first, then those that have (a big
    job a runner stepped aside from, one interrupted): a one-image job never waits for
    a 100,000-image one submitted before it.
    """
    stmt = (
        select(JobRow)
        .where(JobRow.status == QUEUED)
        .order_by(JobRow.started_at.is_not(None), JobRow.created_at)
        .limit(1)
        .with_for_update(skip_locked=True)
    )
    job = session.scalars(stmt).one_or_none()
    if job is None:
        return None
    job.status = RUNNING
    job.started_at = job.started_at or now
    job.heartbeat_at = now
    return job


def unstarted_waiting(session: Session) -> bool:
    """Whether a queued job that has never started is waiting."""
    stmt = select(JobRow.id).where(JobRow.status == QUEUED, JobRow.started_at.is_(None)).limit(1)
    return session.scalar(stmt) is not None


def first_pending(session: Session, job_id: str) -> int | None:
    """The index of the job's first item without a result (None: every item has one)."""
    stmt = select(func.min(JobItemRow.idx)).where(
        JobItemRow.job_id == job_id, JobItemRow.result.is_(None)
    )
    found = session.scalar(stmt)
    return None if found is None else int(found)


def beat(session: Session, job_id: str, now: dt.datetime) -> bool:
    """Record that the process running ``job_id`` is alive; False if it no longer runs."""
    result = session.execute(
        update(JobRow).where(JobRow.id == job_id, JobRow.status == RUNNING).values(heartbeat_at=now)
    )
    return int(getattr(result, "rowcount", 0) or 0) == 1


def _stale(before: dt.datetime) -> ColumnElement[bool]:
    """Running, with a heartbeat older than ``before`` (or never written)."""
    return (JobRow.status == RUNNING) & or_(
        JobRow.heartbeat_at.is_(None), JobRow.heartbeat_at < before
    )


def stale_running(session: Session, before: dt.datetime) -> list[str]:
    """Running jobs whose heartbeat is older than ``before`` (or was never written)."""
    return list(session.scalars(select(JobRow.id).where(_stale(before))))


def requeue_stale(session: Session, job_ids: list[str], before: dt.datetime) -> int:
    """Queue again those of ``job_ids`` still running with a heartbeat older than ``before``.

    The condition is checked again in the write: a job whose process beat in between
    is left alone. Returns how many were queued.
    """
    if not job_ids:
        return 0
    result = session.execute(
        update(JobRow)
        .where(JobRow.id.in_(job_ids), _stale(before))
        .values(
            status=QUEUED,
            error="waiting to retry: the process running it stopped (no heartbeat)",
        )
    )
    return int(getattr(result, "rowcount", 0) or 0)


def requeue_job(session: Session, job_id: str, *, error: str | None) -> bool:
    """Put one running job back in the queue, e.g. after a storage failure interrupted it.

    Args:
        session: The write transaction.
        job_id: The job.
        error: Why it waits (shown with the job until it finishes); None clears it.

    Returns:
        True if the job was running (done and failed jobs are left alone).
    """
    result = session.execute(
        update(JobRow)
        .where(JobRow.id == job_id, JobRow.status == RUNNING)
        .values(status=QUEUED, error=error)
    )
    return int(getattr(result, "rowcount", 0) or 0) == 1


def finish_job(
    session: Session, job_id: str, *, status: str, now: dt.datetime, error: str | None = None
) -> None:
    session.execute(
        update(JobRow)
        .where(JobRow.id == job_id)
        .values(status=status, finished_at=now, error=error)
    )


def cancel_job(session: Session, job_id: str, *, now: dt.datetime, by: str) -> JobRow:
    """Stop a queued or running job: it ends ``failed`` with ``error: "cancelled by <by>"``.

    Results stored so far stay; a chunk being classified is stored when it ends, and no
    other chunk starts (runners and workers read the job's status before each chunk).

    Raises:
        NotFoundError: No such job.
        ConflictError: The job has finished already.
    """
    job = session.scalars(select(JobRow).where(JobRow.id == job_id).with_for_update()).one_or_none()
    if job is None:
        raise NotFoundError(f"no job with id {job_id!r}")
    if job.status not in (QUEUED, RUNNING):
        raise ConflictError(
            f"job {job_id} is {job.status} already: only a queued or running job can be cancelled"
        )
    job.status = FAILED
    job.finished_at = now
    job.error = f"cancelled by {by}"
    return job


def set_callback_status(
    session: Session, job_id: str, status: str, *, callback_url: str | None = None
) -> None:
    """Record how the callback went; ``callback_url`` replaces the stored URL (redacted)."""
    values: dict[str, Any] = {"callback_status": status}
    if callback_url is not None:
        values["callback_url"] = callback_url
    session.execute(update(JobRow).where(JobRow.id == job_id).values(**values))


# How a callback's state reads in ``callback_status``: ``None`` (not tried yet), then
# ``sending:`` and ``retrying:<reason>`` while one process holds it, then
# ``delivered:<status>`` or ``failed:<reason>``. While held, the status carries the claim:
# ``@<unix time it lapses>.<token>`` (see :func:`claim_callback`), which the API does not
# show (:func:`visible_callback_status`).
CALLBACK_SENDING = "sending:"
CALLBACK_RETRYING = "retrying:"
_CLAIMED = (CALLBACK_SENDING, CALLBACK_RETRYING)
_STATUS_LENGTH = 64  # jobs.callback_status is a String(64)


def claim_status(visible: str, until: dt.datetime, token: str | None = None) -> str:
    """A held callback's status: ``visible`` (``sending:`` or ``retrying:<reason>``), the
    time the claim lapses unless renewed and a token that tells two claims apart."""
    token = token or uuid.uuid4().hex[:8]
    suffix = f"@{int(until.timestamp())}.{token}"
    return visible[: _STATUS_LENGTH - len(suffix)] + suffix


def callback_claimed_until(status: str | None) -> dt.datetime | None:
    """When the claim a callback status carries lapses; None when it carries none."""
    if status is None or not status.startswith(_CLAIMED):
        return None
    _visible, mark, claim = status.rpartition("@")
    seconds, dot, token = claim.partition(".")
    if not mark or not dot or not token or not seconds.isdigit():
        return None
    return dt.datetime.fromtimestamp(int(seconds), dt.UTC)


def visible_callback_status(status: str | None) -> str | None:
    """The status as shown to people: without the claim (``retrying:http_503``); None
    (not sent yet) during the first attempt, as before claims, so that a client waiting
    for a status sees the outcome or a retry."""
    if callback_claimed_until(status) is None:
        return status
    assert status is not None  # a status with a claim
    visible = status.rpartition("@")[0]
    return None if visible == CALLBACK_SENDING else visible


def callback_claimable(status: str | None, now: dt.datetime, *, again: bool = False) -> bool:
    """Whether a process may take a callback in this state now.

    A callback never tried, or left between attempts without a claim (by a version
    before claims), may be taken; one held by a process only once its claim lapsed
    (that process died or hangs). ``again`` (an explicit redelivery): a delivered or
    failed one too.
    """
    until = callback_claimed_until(status)
    if until is not None:
        return until <= now
    return again or status is None or status.startswith(_CLAIMED)


def take_callback_claim(
    session: Session,
    job_id: str,
    *,
    seen: str | None,
    claim: str | None,
    callback_url: str | None = None,
) -> bool:
    """Replace the callback status ``seen`` by ``claim``, unless it changed meanwhile.

    A compare-and-set: of two processes that saw the same status, exactly one changes
    the row (on PostgreSQL the second's UPDATE waits for the first to commit, then finds
    the status changed; SQLite runs one write transaction at a time).

    Args:
        session: The write transaction.
        job_id: The job.
        seen: The status the caller read.
        claim: The new status (:func:`claim_status`, an outcome by the claim's holder, or
            None: no longer tried).
        callback_url: A URL to store with it (a redelivery to another URL).

    Returns:
        True if this call changed it.
    """
    current = JobRow.callback_status.is_(None) if seen is None else JobRow.callback_status == seen
    values: dict[str, Any] = {"callback_status": claim}
    if callback_url is not None:
        values["callback_url"] = callback_url
    result = session.execute(
        update(JobRow)
        .where(JobRow.id == job_id, JobRow.status.in_([DONE, FAILED]), current)
        .values(**values)
    )
    return int(getattr(result, "rowcount", 0) or 0) == 1


def claim_callback(
    session: Session,
    job_id: str,
    *,
    until: dt.datetime,
    now: dt.datetime,
    again: bool = False,
    callback_url: str | None = None,
) -> str | None:
    """Take a finished job's callback for this process, until ``until`` unless renewed.

    Args:
        session: The write transaction.
        job_id: The job.
        until: When the claim lapses (another process may then take it over).
        now: The time now.
        again: An explicit redelivery: take a delivered or failed callback too.
        callback_url: Send to this URL instead of the stored one (stored with the claim).

    Returns:
        The claim (the status now stored, ``sending:@...``), or None when the job is not
        finished, has no callback URL, or its callback is sent, or held by another process.

    Raises:
        NotFoundError: No job has this id.
    """
    row = session.execute(
        select(JobRow.status, JobRow.callback_url, JobRow.callback_status).where(
            JobRow.id == job_id
        )
    ).one_or_none()
    if row is None:
        raise NotFoundError(f"no job with id {job_id!r}")
    status, stored_url, seen = row
    if status not in (DONE, FAILED) or not (callback_url or stored_url):
        return None
    if not callback_claimable(seen, now, again=again):
        return None
    claim = claim_status(CALLBACK_SENDING, until)
    if not take_callback_claim(session, job_id, seen=seen, claim=claim, callback_url=callback_url):
        return None
    return claim


def callback_pending(job: JobRow) -> bool:
    """Whether a finished job's callback still has to be sent (never tried, held by a
    process, or cut off between attempts by a stop or a crash)."""
    return (
        job.status in (DONE, FAILED)
        and bool(job.callback_url)
        and (job.callback_status is None or job.callback_status.startswith(_CLAIMED))
    )


def pending_callbacks(
    session: Session, *, limit: int = 1000, since: dt.datetime | None = None
) -> list[tuple[str, str | None]]:
    """Finished jobs whose callback still has to be sent (or is being sent), oldest first.

    Args:
        session: A session.
        limit: At most this many.
        since: Only jobs submitted since then: a range of the ``(status, created_at)``
            index, cheap enough to sweep every minute.

    Returns:
        ``(job id, callback status)`` pairs (see :func:`callback_claimable`).
    """
    conditions: list[ColumnElement[bool]] = [
        JobRow.status.in_([DONE, FAILED]),
        JobRow.callback_url.is_not(None),
        JobRow.callback_status.is_(None)
        | JobRow.callback_status.startswith(CALLBACK_SENDING, autoescape=True)
        | JobRow.callback_status.startswith(CALLBACK_RETRYING, autoescape=True),
    ]
    if since is not None:
        conditions.append(JobRow.created_at >= since)
    stmt = (
        select(JobRow.id, JobRow.callback_status)
        .where(*conditions)
        .order_by(JobRow.finished_at, JobRow.id)
        .limit(limit)
    )
    return [(job_id, status) for job_id, status in session.execute(stmt)]


def failed_callbacks(
    session: Session, *, limit: int = 100, job_ids: Sequence[str] | None = None
) -> list[JobRow]:
    """Finished jobs whose callback was not delivered (failed or still pending), newest
    first; only among ``job_ids`` when given."""
    conditions: list[ColumnElement[bool]] = [
        JobRow.status.in_([DONE, FAILED]),
        JobRow.callback_url.is_not(None),
        JobRow.callback_status.is_(None)
        | ~JobRow.callback_status.startswith("delivered:", autoescape=True),
    ]
    if job_ids is not None:
        conditions.append(JobRow.id.in_(job_ids))
    stmt = (
        select(JobRow)
        .where(*conditions)
        .order_by(JobRow.finished_at.desc(), JobRow.id)
        .limit(limit)
    )
    return list(session.scalars(stmt))


# --- Chunked execution shared by the in-process runner and Celery workers ------------


def mark_running(session: Session, job_id: str, now: dt.datetime) -> None:
    """A queued job whose first chunk starts becomes running (no-op otherwise)."""
    session.execute(
        update(JobRow)
        .where(JobRow.id == job_id, JobRow.status == QUEUED)
        .values(status=RUNNING, started_at=func.coalesce(JobRow.started_at, now))
    )


def claim_items(
    session: Session, job_id: str, start: int, stop: int, *, lock: bool
) -> list[JobItemRow]:
    """Items ``start <= idx < stop`` without a result, in order.

    With ``lock`` (PostgreSQL) the rows stay locked until the caller's transaction
    ends and rows another worker holds are skipped: two workers never classify the
    same item at once, and a killed worker's locks go with its connection.
    """
    stmt = (
        select(JobItemRow)
        .where(
            JobItemRow.job_id == job_id,
            JobItemRow.idx >= start,
            JobItemRow.idx < stop,
            JobItemRow.result.is_(None),
        )
        .order_by(JobItemRow.idx)
    )
    if lock:
        stmt = stmt.with_for_update(skip_locked=True)
    return list(session.scalars(stmt))


def pending_chunks(session: Session, job_id: str, chunk_size: int) -> set[int]:
    """The chunks (``idx // chunk_size``) of a job that have an item without a result.

    One query, however large the job (a start of the API re-sends only these).
    """
    chunk = JobItemRow.idx // chunk_size
    stmt = select(chunk).where(JobItemRow.job_id == job_id, JobItemRow.result.is_(None)).distinct()
    return {int(n) for n in session.scalars(stmt)}


def count_pending(session: Session, job_id: str, start: int = 0, stop: int | None = None) -> int:
    """Items of ``[start, stop)`` still without a result (locked or not)."""
    stmt = (
        select(func.count())
        .select_from(JobItemRow)
        .where(JobItemRow.job_id == job_id, JobItemRow.idx >= start, JobItemRow.result.is_(None))
    )
    if stop is not None:
        stmt = stmt.where(JobItemRow.idx < stop)
    return int(session.scalar(stmt) or 0)


def store_results(
    session: Session,
    job_id: str,
    results: dict[int, dict[str, Any]],
    *,
    urls: Mapping[int, str] | None = None,
) -> int:
    """Store results of items that have none yet; returns how many were stored.

    Each item is a conditional UPDATE (``result IS NULL``), and the job's ``done``
    grows by exactly the rows that changed, so concurrent chunks keep it exact.

    Args:
        session: The transaction.
        job_id: The job.
        results: Result per item index.
        urls: A new URL per item index, stored with its result (the submitted URL
            without its password, which only the download needed).
    """
    stored = 0
    urls = urls or {}
    for idx, result in results.items():
        values: dict[str, Any] = {"result": result}
        if idx in urls:
            values["url"] = urls[idx]
        outcome = session.execute(
            update(JobItemRow)
            .where(
                JobItemRow.job_id == job_id,
                JobItemRow.idx == idx,
                JobItemRow.result.is_(None),
            )
            .values(**values)
        )
        stored += int(getattr(outcome, "rowcount", 0) or 0)
    if stored:
        session.execute(update(JobRow).where(JobRow.id == job_id).values(done=JobRow.done + stored))
    return stored


def finish_if_complete(session: Session, job_id: str, now: dt.datetime) -> bool:
    """Mark the job done if no item is pending; True only for the caller that did it."""
    pending = (
        select(JobItemRow.idx)
        .where(JobItemRow.job_id == job_id, JobItemRow.result.is_(None))
        .exists()
    )
    outcome = session.execute(
        update(JobRow)
        .where(JobRow.id == job_id, JobRow.status.in_([QUEUED, RUNNING]), ~pending)
        # A "waiting to retry" note left by a storage failure is over once it is done.
        .values(status=DONE, finished_at=now, error=None)
    )
    return int(getattr(outcome, "rowcount", 0) or 0) == 1


def unfinished_jobs(session: Session) -> list[JobRow]:
    """Queued or running jobs, oldest first (to dispatch again after a restart)."""
    stmt = select(JobRow).where(JobRow.status.in_([QUEUED, RUNNING])).order_by(JobRow.created_at)
    return list(session.scalars(stmt))


def queue_depth(session: Session) -> tuple[int, int]:
    """Jobs queued, and images of queued or running jobs not yet classified.

    Two indexed aggregate reads (metrics read them at scrape time).
    """
    queued = session.scalar(select(func.count()).where(JobRow.status == "queued"))
    pending = session.scalar(
        select(func.coalesce(func.sum(JobRow.total - JobRow.done), 0)).where(
            JobRow.status.in_(("queued", "running"))
        )
    )
    return int(queued or 0), int(pending or 0)


def oldest_queued(session: Session) -> dt.datetime | None:
    """When the oldest job still waiting to start was submitted (None: none waits).

    One read on the ``(status, created_at)`` index (metrics read it at scrape time).
    """
    return session.scalar(select(func.min(JobRow.created_at)).where(JobRow.status == QUEUED))


def status_counts(session: Session, *, since: dt.datetime | None = None) -> dict[str, int]:
    """Jobs per status: all queued and running ones, and those submitted since ``since``."""
    query = select(JobRow.status, func.count()).group_by(JobRow.status)
    if since is not None:
        query = query.where((JobRow.created_at >= since) | JobRow.status.in_((QUEUED, RUNNING)))
    return {str(status): int(n) for status, n in session.execute(query)}
