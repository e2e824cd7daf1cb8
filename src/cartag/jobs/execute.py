"""Running a job, one chunk of items at a time: the plain functions behind every worker.

The in-process :class:`~cartag.jobs.runner.JobRunner` and the Celery tasks call the
same :func:`run_job_chunk`, :func:`finish_if_complete` and :func:`fail_job`.

Exactly once, per item and per image:

- An item's result is stored with a conditional UPDATE (``result IS NULL``), so a
  chunk run twice never overwrites or double-counts a result.
- On PostgreSQL a chunk locks its pending rows (``FOR UPDATE SKIP LOCKED``) for the
  whole classification, in one transaction: a second worker handed the same chunk
  (a redelivery) skips them instead of classifying them again, and when a worker is
  killed its connection and so its locks go away, and the redelivered chunk finds the
  rows free. SQLite has no row locks; it serves only the single in-process worker.
- An image classified before a kill is stored in the image cache in its own
  transaction, so the worker that finishes the chunk answers it from the cache
  without running the model again.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
from dataclasses import dataclass
from typing import Any, Final

from pydantic import SecretStr

from cartag.clock import Clock
from cartag.errors import FetchError
from cartag.jobs import callbacks
from cartag.logs import request_id_scope
from cartag.net.fetch import Fetcher
from cartag.pipeline.classify import ClassifyService, ClassifyStats
from cartag.pipeline.results import ImageRequest
from cartag.redaction import redact_url, strip_password
from cartag.store import jobs as job_repo
from cartag.store.db import Database
from cartag.store.tables import JobItemRow

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ChunkReport:
    """What one call of :func:`run_job_chunk` did.

    Attributes:
        claimed: Pending items this call took and classified.
        stored: Results it stored (less than ``claimed`` only if another worker
            stored some first, which the row locks prevent on PostgreSQL).
        held_elsewhere: Pending items of the chunk it could not take because another
            worker holds them; the chunk is not finished until they are stored.
        model_runs: Images the model classified for this chunk.
        job_status: The job's status when the chunk started (``done``/``failed``
            jobs are left alone).
    """

    claimed: int
    stored: int
    held_elsewhere: int
    model_runs: int
    job_status: str


def chunk_bounds(total: int, chunk_size: int) -> list[tuple[int, int]]:
    """``[start, stop)`` index ranges covering ``total`` items, ``chunk_size`` at a time."""
    if chunk_size <= 0:
        raise ValueError("chunk_size must be positive")
    return [(start, min(start + chunk_size, total)) for start in range(0, total, chunk_size)]


async def run_job_chunk(
    db: Database,
    service: ClassifyService,
    clock: Clock,
    job_id: str,
    start: int,
    stop: int,
) -> ChunkReport:
    """Classify the pending items ``start <= idx < stop`` of a job and store their results.

    Logs made meanwhile carry ``request_id = job:<job_id>``.

    Raises:
        NotFoundError: No job has this id.
        ModelError: The model failed (nothing of the chunk is stored; run it again).
    """
    with request_id_scope(f"job:{job_id}"):
        return await _run_job_chunk(db, service, clock, job_id, start, stop)


async def _run_job_chunk(
    db: Database,
    service: ClassifyService,
    clock: Clock,
    job_id: str,
    start: int,
    stop: int,
) -> ChunkReport:
    with db.write() as session:
        job = job_repo.get_job(session, job_id)
        if job.status in (job_repo.DONE, job_repo.FAILED):
            return ChunkReport(0, 0, 0, 0, job.status)
        job_repo.mark_running(session, job_id, clock.now())
        advertiser_id, status = job.advertiser_id, job.status
    stats = ClassifyStats()
    if db.dialect == "postgresql":
        # One transaction holds the row locks while the images are classified.
        with db.write() as session:
            items = job_repo.claim_items(session, job_id, start, stop, lock=True)
            results = await _classify(service, advertiser_id, items, stats)
            stored = job_repo.store_results(session, job_id, results, urls=_stored_urls(items))
            held = job_repo.count_pending(session, job_id, start, stop)
    else:
        with db.read() as session:
            items = job_repo.claim_items(session, job_id, start, stop, lock=False)
        results = await _classify(service, advertiser_id, items, stats)
        with db.write() as session:
            stored = job_repo.store_results(session, job_id, results, urls=_stored_urls(items))
            held = job_repo.count_pending(session, job_id, start, stop)
    log.info(
        "job %s chunk [%d, %d): %d claimed, %d stored, %d model runs, %d held elsewhere",
        job_id,
        start,
        stop,
        len(items),
        stored,
        stats.model_runs,
        held,
    )
    return ChunkReport(len(items), stored, held, stats.model_runs, status)


async def _classify(
    service: ClassifyService,
    advertiser_id: str,
    items: list[JobItemRow],
    stats: ClassifyStats,
) -> dict[int, dict[str, Any]]:
    if not items:
        return {}
    requests = [ImageRequest(item.url, item.scrape_color) for item in items]
    results = await service.classify(advertiser_id, requests, stats)
    stored = {}
    for item, result in zip(items, results, strict=True):
        # Stored results (read back by GET /v1/jobs and the callback) keep no password.
        answer = result.to_dict()
        answer["url"] = strip_password(result.url)
        stored[item.idx] = answer
    return stored


def _stored_urls(items: list[JobItemRow]) -> dict[int, str]:
    """The URLs to keep once the items' results are stored: without their passwords."""
    return {item.idx: strip_password(item.url) for item in items if "@" in item.url}


def finish_if_complete(db: Database, clock: Clock, job_id: str) -> bool:
    """Mark the job done once every item has a result.

    Returns:
        True for exactly one caller per job: the one that should send the callback.
    """
    with db.write() as session:
        return job_repo.finish_if_complete(session, job_id, clock.now())


def fail_job(db: Database, clock: Clock, job_id: str, error: str) -> None:
    """Record that a job cannot finish (its finished items keep their results)."""
    with db.write() as session:
        job_repo.finish_job(session, job_id, status=job_repo.FAILED, now=clock.now(), error=error)


def callback_pending(db: Database, job_id: str) -> bool:
    """Whether the job is finished and its callback still has to be sent."""
    with db.read() as session:
        return job_repo.callback_pending(job_repo.get_job(session, job_id))


# Attempts of one callback, and the wait before the second (doubling after each): a
# receiver that is down for about half a minute still gets it; at most
# ~ attempts x 2 x callback_timeout_s + 30 s in all.
CALLBACK_ATTEMPTS: Final[int] = 5
CALLBACK_BACKOFF_S: Final[float] = 2.0
# Settings.callback_timeout_s's default, for callers without settings (tests).
CALLBACK_TIMEOUT_S: Final[float] = 10.0
# Added to a claim's lease: a slow database write or a clock a little apart from the
# other processes' never lets a second process take a callback still being sent.
CLAIM_SLACK_S: Final[float] = 60.0
# How often every serving process and worker looks for callbacks left pending, and how
# far back (jobs submitted since then; a process's start looks at them all).
CALLBACK_SWEEP_S: Final[float] = 60.0
CALLBACK_SWEEP_WINDOW_S: Final[float] = 7 * 24 * 3600.0


def callback_lease_s(attempts: int, backoff_s: float, timeout_s: float) -> float:
    """How long a process holds a callback it claimed: all of its attempts (each at
    most 2 x ``timeout_s``) and the waits between them, plus :data:`CLAIM_SLACK_S`.

    Each attempt renews the claim, so this is the longest a dead process's claim
    keeps the others from taking its callback over (about 3 minutes by default).
    """
    waits = sum(backoff_s * float(2**i) for i in range(max(attempts - 1, 0)))
    return attempts * 2 * timeout_s + waits + CLAIM_SLACK_S


def _transient(outcome: str) -> bool:
    """Whether a failed delivery may go through later: the receiver is down, slow or busy.

    A redirect, another 4xx or a refused address will not change by waiting.
    """
    reason = outcome.removeprefix("failed:")
    if reason.startswith("http_"):
        code = int(reason.removeprefix("http_"))
        return code >= 500 or code in (408, 429)
    return reason in ("timeout", "connection_error", "dns_error")


async def _deliver(fetcher: Fetcher, url: str, key: str, clock: Clock, body: bytes) -> str:
    # Signed at each attempt: a retried callback carries a fresh timestamp.
    headers = callbacks.signed_headers(key, int(clock.now().timestamp()), body)
    try:
        status = await fetcher.post_body(url, body, headers)
    except FetchError as exc:
        return f"failed:{exc.reason}"
    if 200 <= status < 300:
        return f"delivered:{status}"
    if 300 <= status < 400:
        return "failed:redirect"
    return f"failed:http_{status}"


class _Claim:
    """The callback status this process holds; each change is a compare-and-set on it,
    so a process whose claim was taken over (it hung past the lease) stops there."""

    def __init__(self, db: Database, job_id: str, status: str, lease_s: float) -> None:
        self.db = db
        self.job_id = job_id
        self.status: str | None = status
        self.lease_s = lease_s

    def renew(self, visible: str, clock: Clock) -> bool:
        until = clock.now() + dt.timedelta(seconds=self.lease_s)
        return self.replace(job_repo.claim_status(visible, until))

    def replace(self, status: str | None, callback_url: str | None = None) -> bool:
        with self.db.write() as session:
            held = job_repo.take_callback_claim(
                session, self.job_id, seen=self.status, claim=status, callback_url=callback_url
            )
        if held:
            self.status = status
        else:
            log.warning("job %s: another process took its callback over", self.job_id)
        return held

    def release(self) -> None:
        """Let another process take the callback at once (this one stops)."""
        visible = job_repo.visible_callback_status(self.status)
        # Never tried: pending as before; between attempts: the reason, without a claim.
        self.replace(None if visible == job_repo.CALLBACK_SENDING else visible)


async def send_callback(
    db: Database,
    fetcher: Fetcher,
    job_id: str,
    *,
    clock: Clock,
    secret: SecretStr | None = None,
    results_limit: int = 1000,
    attempts: int = CALLBACK_ATTEMPTS,
    backoff_s: float = CALLBACK_BACKOFF_S,
    timeout_s: float = CALLBACK_TIMEOUT_S,
    again: bool = False,
    url: str | None = None,
) -> str | None:
    """POST the job's outcome to its callback URL, if it has one and no other process
    is sending it; records and returns how it went.

    The callback is first claimed in the database (:func:`cartag.store.jobs.claim_callback`):
    of several processes trying to send it (a server that finished the job, another's
    sweep, a Celery chunk delivered again), exactly one does. A claim lasts
    :func:`callback_lease_s` and is renewed at each attempt; a process that dies holding
    it is replaced by the next sweep once it lapsed, and one stopped cleanly lets go at once.

    The body is signed (:mod:`cartag.jobs.callbacks`) with ``secret``, or the deployment's
    secret when it is None. Jobs of up to ``results_limit`` items carry their results in
    the payload. Outcomes: ``delivered:<status>`` for a 2xx, ``failed:redirect`` for a 3xx
    (not followed: the signed body would go elsewhere), ``failed:http_<status>``, or
    ``failed:<reason>`` (``blocked_address``, ``timeout``...).

    A transient failure (connection refused, timeout, 5xx, 408, 429) is tried again, up to
    ``attempts`` in all, ``backoff_s`` apart and doubling; meanwhile the job shows
    ``retrying:<reason>``. Once the outcome is final, the stored callback URL keeps no
    password or token.

    Args:
        timeout_s: The fetcher's ``callback_timeout_s`` (sets the claim's lease).
        again: Send it even if it was delivered or failed (an explicit redelivery).
        url: Send to this URL instead of the stored one (stored with the claim).

    Returns:
        The outcome; None when there is nothing to send (no callback URL, not finished,
        already sent) or another process holds it.
    """
    lease_s = callback_lease_s(attempts, backoff_s, timeout_s)
    with db.write() as session:
        now = clock.now()
        status = job_repo.claim_callback(
            session,
            job_id,
            until=now + dt.timedelta(seconds=lease_s),
            now=now,
            again=again,
            callback_url=url,
        )
    if status is None:
        return None
    claim = _Claim(db, job_id, status, lease_s)
    try:
        return await _send_claimed(
            db, fetcher, claim, clock, secret, results_limit, attempts, backoff_s
        )
    except asyncio.CancelledError:
        # Stopped (a server or worker shutting down): the next sweep sends it, now.
        with contextlib.suppress(Exception):
            claim.release()
        raise


async def _send_claimed(
    db: Database,
    fetcher: Fetcher,
    claim: _Claim,
    clock: Clock,
    secret: SecretStr | None,
    results_limit: int,
    attempts: int,
    backoff_s: float,
) -> str | None:
    job_id = claim.job_id
    with db.read() as session:
        job = job_repo.get_job(session, job_id)
        payload: dict[str, Any] = {
            "job_id": job.id,
            "advertiser_id": job.advertiser_id,
            "status": job.status,
            "total": job.total,
            "done": job.done,
            "error": job.error,
            "results_url": f"/v1/jobs/{job.id}",
        }
        if job.total <= results_limit:
            payload["results"] = job_repo.job_results(session, job.id)
        url = job.callback_url or ""
    body = callbacks.encode_payload(payload)
    key = callbacks.callback_secret(db, secret, clock)
    attempt = 1
    while True:
        outcome = await _deliver(fetcher, url, key, clock, body)
        if outcome.startswith("delivered:") or attempt >= attempts or not _transient(outcome):
            break
        delay = backoff_s * 2 ** (attempt - 1)
        log.warning(
            "job %s callback to %s: %s (attempt %d of %d); again in %.0f s",
            job_id,
            redact_url(url),
            outcome,
            attempt,
            attempts,
            delay,
        )
        if not claim.renew(job_repo.CALLBACK_RETRYING + outcome.removeprefix("failed:"), clock):
            return None
        await asyncio.sleep(delay)
        attempt += 1
    log.info("job %s callback to %s: %s", job_id, redact_url(url), outcome)
    if not claim.replace(outcome, callback_url=redact_url(url)):
        return None
    return outcome


async def send_pending_callbacks(
    db: Database,
    fetcher: Fetcher,
    *,
    clock: Clock,
    secret: SecretStr | None = None,
    results_limit: int = 1000,
    attempts: int = CALLBACK_ATTEMPTS,
    backoff_s: float = CALLBACK_BACKOFF_S,
    timeout_s: float = CALLBACK_TIMEOUT_S,
    since: dt.datetime | None = None,
) -> int:
    """Send the callbacks of finished jobs that no process is sending: never sent (the
    process that finished the job stopped first), or held by a process that died.

    Safe in every process at once: each callback is claimed before it is sent
    (:func:`send_callback`), one at a time, so the others share the rest.

    Args:
        since: Only jobs submitted since then (a periodic sweep); None: all.

    Returns:
        How many this call sent (delivered or not).
    """
    with db.read() as session:
        pending = job_repo.pending_callbacks(session, since=since)
    sent = 0
    for job_id, status in pending:
        # Read without a write: the ones another process holds cost nothing more.
        if not job_repo.callback_claimable(status, clock.now()):
            continue
        outcome = await send_callback(
            db,
            fetcher,
            job_id,
            clock=clock,
            secret=secret,
            results_limit=results_limit,
            attempts=attempts,
            backoff_s=backoff_s,
            timeout_s=timeout_s,
        )
        if outcome is not None:
            log.info("job %s: sent the callback no process was sending: %s", job_id, outcome)
            sent += 1
    return sent
