"""The Celery task: one chunk of a job's items, run by ``cartag worker``.

The task is a thin shell over :mod:`cartag.jobs.execute`; what it adds is the
delivery policy:

- a chunk that failed is retried ``CARTAG_JOB_CHUNK_RETRIES`` times, then the job fails;
- a storage failure (database unreachable, read-only, full) is not the chunk's fault:
  it is retried with backoff (up to :data:`STORAGE_RETRY_MAX_S` apart) for as long as
  it lasts, never fails the job and never acknowledges a chunk whose results were not
  stored; the job stays ``running`` and finishes once the store is back;
- a chunk whose items another worker still holds is looked at again later; those
  retries use up neither count.

The counts travel in the task's keyword arguments (``failures``, ``outages``):
Celery's own retry count adds up every kind.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from cartag.errors import NotFoundError
from cartag.jobs import delivery, execute
from cartag.jobs.celery_app import CHUNK_TASK
from cartag.jobs.worker import WorkerContext
from cartag.store import jobs as job_repo
from cartag.store.health import storage_problem

log = logging.getLogger(__name__)

FINISHED = (job_repo.DONE, job_repo.FAILED)

# Seconds before a chunk whose items another worker holds is looked at again.
HELD_RETRY_S = 2.0
# The longest wait between two tries of a chunk the store refused.
STORAGE_RETRY_MAX_S = 30.0


def register_tasks(app: Any, context: Callable[[], WorkerContext]) -> Any:
    """Register the chunk task on ``app``; ``context()`` gives the process's worker context.

    Returns:
        The task object.
    """

    @app.task(  # type: ignore[untyped-decorator]
        name=CHUNK_TASK,
        bind=True,
        acks_late=True,
        reject_on_worker_lost=True,
        max_retries=None,
    )
    def run_chunk(
        self: Any, job_id: str, start: int, stop: int, failures: int = 0, outages: int = 0
    ) -> None:
        ctx = context()
        ctx.follow_production()
        log.info("job %s chunk [%d, %d): started", job_id, start, stop)
        counts = {"failures": failures, "outages": outages}

        def again(countdown: float, exc: Exception | None = None, **bump: int) -> Exception:
            kwargs = {**counts, **{k: counts[k] + v for k, v in bump.items()}}
            retry: Exception = self.retry(exc=exc, countdown=countdown, kwargs=kwargs)
            return retry

        try:
            finished, status = _run(ctx, job_id, start, stop, failures, again)
        except NotFoundError:
            log.warning("job %s no longer exists; chunk [%d, %d) dropped", job_id, start, stop)
            return
        except Exception as exc:
            # One place for every write of the chunk the store refused: the run, the
            # job's failure, its completion. Never acknowledged unrecorded.
            problem = storage_problem(exc)
            if problem is None:
                raise
            raise _outage(job_id, start, stop, problem, outages, again, exc) from exc
        if finished:
            _send_callback(ctx, job_id)
        elif status in FINISHED and delivery.callback_pending(ctx.db, job_id):
            # Delivered again after the worker that finished the job stopped before its
            # callback went out (acks_late): sent now rather than at the next sweep
            # (claimed first, so never while another process sends it).
            log.info("job %s finished; sending the callback a stopped worker did not", job_id)
            _send_callback(ctx, job_id)

    return run_chunk


def _run(
    ctx: WorkerContext,
    job_id: str,
    start: int,
    stop: int,
    failures: int,
    again: Callable[..., Exception],
) -> tuple[bool, str | None]:
    """Run the chunk; a failure is retried, then fails the job. Storage failures are
    raised as they are (the task retries them as outages).

    Returns:
        (whether this call ended the job, so its callback is owed now; the job's status
        when the chunk started, None when it failed here).
    """
    try:
        report = ctx.run(execute.run_job_chunk(ctx.db, ctx.service, ctx.clock, job_id, start, stop))
    except NotFoundError:
        raise
    except Exception as exc:  # noqa: BLE001 - retried, then recorded on the job
        if storage_problem(exc) is not None:
            raise
        if failures < ctx.settings.job_chunk_retries:
            log.warning("job %s chunk [%d, %d) failed (%s); retrying", job_id, start, stop, exc)
            raise again(2.0**failures, exc, failures=1) from exc
        log.exception("job %s chunk [%d, %d) failed; the job fails", job_id, start, stop)
        execute.fail_job(ctx.db, ctx.clock, job_id, f"{type(exc).__name__}: {exc}")
        return True, None
    if report.held_elsewhere:
        raise again(HELD_RETRY_S)
    finished = execute.finish_if_complete(ctx.db, ctx.clock, job_id)
    if finished:
        log.info("job %s done", job_id)
    return finished, report.job_status


def _outage(
    job_id: str,
    start: int,
    stop: int,
    problem: str,
    outages: int,
    again: Callable[..., Exception],
    exc: Exception,
) -> Exception:
    """The retry of a chunk the store refused: later and later, never counted as a failure."""
    countdown = min(2.0**outages, STORAGE_RETRY_MAX_S)
    log.warning(
        "job %s chunk [%d, %d): %s; tried again in %.0f s (the job waits)",
        job_id,
        start,
        stop,
        problem,
        countdown,
    )
    return again(countdown, exc, outages=1)


def _send_callback(ctx: WorkerContext, job_id: str) -> None:
    """The job's callback, sent beside the chunks when the worker can (never blocking
    the next chunk on a slow receiver), else here."""
    if ctx.callbacks is not None and ctx.callbacks.send_soon(job_id):
        return
    ctx.run(_callback(ctx, job_id))


async def _callback(ctx: WorkerContext, job_id: str) -> None:
    await delivery.send_callback(
        ctx.db,
        ctx.fetcher,
        job_id,
        clock=ctx.clock,
        policy=delivery.CallbackPolicy.from_settings(ctx.settings),
    )
