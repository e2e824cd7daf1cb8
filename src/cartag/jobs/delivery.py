"""Job callbacks: claimed in the database, then sent, retried and recorded.

A finished job's outcome is POSTed, signed, to its callback URL. Several processes may
try to send one callback (the server that finished the job, another's sweep, a Celery
chunk delivered again, ``cartag callbacks redeliver``); each first claims it with a
compare-and-set on ``jobs.callback_status`` (:func:`cartag.store.jobs.claim_callback`),
so exactly one sends it. A claim lasts :attr:`CallbackPolicy.lease_s` and is renewed at
each attempt; a dead process's claim is taken over once it lapsed.
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
from cartag.net.fetch import Fetcher
from cartag.redaction import redact_url
from cartag.settings import Settings
from cartag.store import jobs as job_repo
from cartag.store.db import Database

log = logging.getLogger(__name__)


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
# Callbacks a sweep sends at once (each to its own receiver).
SWEEP_CONCURRENCY: Final[int] = 8


def sweep_since(clock: Clock) -> dt.datetime:
    """Where a periodic sweep starts: the jobs submitted in the last
    :data:`CALLBACK_SWEEP_WINDOW_S` (a process's first sweep looks at them all)."""
    return clock.now() - dt.timedelta(seconds=CALLBACK_SWEEP_WINDOW_S)


@dataclass(frozen=True)
class CallbackPolicy:
    """How a process sends callbacks: the same for the first try, a sweep and a redelivery.

    Attributes:
        secret: Signs the body; None: the deployment's secret
            (:func:`cartag.jobs.callbacks.callback_secret`).
        results_limit: Jobs of up to this many items carry their results in the payload.
        attempts: Attempts of a callback whose receiver failed transiently.
        backoff_s: Wait before the second attempt; doubles after each.
        timeout_s: The fetcher's ``callback_timeout_s`` (sets the claim's lease).
    """

    secret: SecretStr | None = None
    results_limit: int = 1000
    attempts: int = CALLBACK_ATTEMPTS
    backoff_s: float = CALLBACK_BACKOFF_S
    timeout_s: float = CALLBACK_TIMEOUT_S

    @classmethod
    def from_settings(cls, settings: Settings, **changes: Any) -> CallbackPolicy:
        """The deployment's policy (its secret and callback timeout), with ``changes``."""
        values: dict[str, Any] = {
            "secret": settings.callback_secret,
            "timeout_s": settings.callback_timeout_s,
        }
        return cls(**{**values, **changes})

    @property
    def lease_s(self) -> float:
        """How long a process holds a callback it claimed: all of its attempts (each at
        most 2 x ``timeout_s``) and the waits between them, plus :data:`CLAIM_SLACK_S`.

        Each attempt renews the claim, so this is the longest a dead process's claim
        keeps the others from taking its callback over (about 3 minutes by default).
        """
        waits = sum(self.backoff_s * float(2**i) for i in range(max(self.attempts - 1, 0)))
        return self.attempts * 2 * self.timeout_s + waits + CLAIM_SLACK_S


# The policy of callers without settings (tests, tools): the constants above.
DEFAULT_POLICY: Final[CallbackPolicy] = CallbackPolicy()


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
    policy: CallbackPolicy = DEFAULT_POLICY,
    again: bool = False,
    url: str | None = None,
) -> str | None:
    """POST the job's outcome to its callback URL, if it has one and no other process
    is sending it; records and returns how it went.

    The callback is first claimed in the database (:func:`cartag.store.jobs.claim_callback`):
    of several processes trying to send it (a server that finished the job, another's
    sweep, a Celery chunk delivered again), exactly one does. A claim lasts
    :attr:`CallbackPolicy.lease_s` and is renewed at each attempt; a process that dies holding
    it is replaced by the next sweep once it lapsed, and one stopped cleanly lets go at once.

    The body is signed (:mod:`cartag.jobs.callbacks`) with the policy's secret, or the
    deployment's when it is None. Jobs of up to ``policy.results_limit`` items carry their
    results in the payload. Outcomes: ``delivered:<status>`` for a 2xx,
    ``failed:redirect`` for a 3xx (not followed: the signed body would go elsewhere),
    ``failed:http_<status>``, or ``failed:<reason>`` (``blocked_address``, ``timeout``...).

    A transient failure (connection refused, timeout, 5xx, 408, 429) is tried again, up to
    ``policy.attempts`` in all, ``policy.backoff_s`` apart and doubling; meanwhile the job shows
    ``retrying:<reason>``. Once the outcome is final, the stored callback URL keeps no
    password or token.

    Args:
        policy: Secret, payload size, attempts, backoff and timeout.
        again: Send it even if it was delivered or failed (an explicit redelivery).
        url: Send to this URL instead of the stored one (stored with the claim).

    Returns:
        The outcome; None when there is nothing to send (no callback URL, not finished,
        already sent) or another process holds it.
    """
    lease_s = policy.lease_s
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
        return await _send_claimed(db, fetcher, claim, clock, policy)
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
    policy: CallbackPolicy,
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
        if job.total <= policy.results_limit:
            payload["results"] = job_repo.job_results(session, job.id)
        url = job.callback_url or ""
    body = callbacks.encode_payload(payload)
    key = callbacks.callback_secret(db, policy.secret, clock)
    attempt = 1
    while True:
        outcome = await _deliver(fetcher, url, key, clock, body)
        if (
            outcome.startswith("delivered:")
            or attempt >= policy.attempts
            or not _transient(outcome)
        ):
            break
        delay = policy.backoff_s * 2 ** (attempt - 1)
        log.warning(
            "job %s callback to %s: %s (attempt %d of %d); again in %.0f s",
            job_id,
            redact_url(url),
            outcome,
            attempt,
            policy.attempts,
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


async def send_callback_or_leave(
    db: Database, fetcher: Fetcher, job_id: str, *, clock: Clock, policy: CallbackPolicy
) -> None:
    """:func:`send_callback` beside other work: a failure is logged, and the job keeps its
    pending callback status for the next sweep to send."""
    try:
        await send_callback(db, fetcher, job_id, clock=clock, policy=policy)
    except Exception:  # noqa: BLE001 - the job keeps its pending callback status
        log.exception("job %s: callback not sent; the next sweep sends it", job_id)


async def send_pending_callbacks(
    db: Database,
    fetcher: Fetcher,
    *,
    clock: Clock,
    policy: CallbackPolicy = DEFAULT_POLICY,
    since: dt.datetime | None = None,
) -> int:
    """Send the callbacks of finished jobs that no process is sending: never sent (the
    process that finished the job stopped first), or held by a process that died.

    Safe in every process at once: each callback is claimed before it is sent
    (:func:`send_callback`), so the others share the rest. Up to
    :data:`SWEEP_CONCURRENCY` are sent at once: one hanging receiver (all its attempts
    take minutes) holds up only its own.

    Args:
        policy: As :func:`send_callback`'s.
        since: Only jobs submitted since then (a periodic sweep); None: all.

    Returns:
        How many this call sent (delivered or not).
    """
    with db.read() as session:
        pending = job_repo.pending_callbacks(session, since=since)
    slots = asyncio.Semaphore(SWEEP_CONCURRENCY)

    async def one(job_id: str, status: str | None) -> bool:
        async with slots:
            # Read without a write: the ones another process holds cost nothing more.
            if not job_repo.callback_claimable(status, clock.now()):
                return False
            outcome = await send_callback(db, fetcher, job_id, clock=clock, policy=policy)
        if outcome is None:
            return False
        log.info("job %s: sent the callback no process was sending: %s", job_id, outcome)
        return True

    sent = await asyncio.gather(*(one(job_id, status) for job_id, status in pending))
    return sum(sent)
