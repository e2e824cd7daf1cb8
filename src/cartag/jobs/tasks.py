"""The Celery task: one chunk of a job's items, run by ``cartag worker``.

The task is a thin shell over :mod:`cartag.jobs.execute`; what it adds is the
delivery policy: retry a failed chunk a few times, then fail the job; come back
later to a chunk whose items another worker still holds.
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

log = logging.getLogger(__name__)

FINISHED = (job_repo.DONE, job_repo.FAILED)

# Seconds before a chunk whose items another worker holds is looked at again.
HELD_RETRY_S = 2.0


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
    def run_chunk(self: Any, job_id: str, start: int, stop: int) -> None:
        ctx = context()
        ctx.follow_production()
        log.info("job %s chunk [%d, %d): started", job_id, start, stop)
        try:
            report = ctx.run(
                execute.run_job_chunk(ctx.db, ctx.service, ctx.clock, job_id, start, stop)
            )
        except NotFoundError:
            log.warning("job %s no longer exists; chunk [%d, %d) dropped", job_id, start, stop)
            return
        except Exception as exc:  # noqa: BLE001 - retried, then recorded on the job
            attempt = int(self.request.retries or 0)
            if attempt < ctx.settings.job_chunk_retries:
                log.warning("job %s chunk [%d, %d) failed (%s); retrying", job_id, start, stop, exc)
                raise self.retry(exc=exc, countdown=2.0**attempt) from exc
            log.exception("job %s chunk [%d, %d) failed; the job fails", job_id, start, stop)
            execute.fail_job(ctx.db, ctx.clock, job_id, f"{type(exc).__name__}: {exc}")
            ctx.run(_callback(ctx, job_id))
            return
        if report.held_elsewhere:
            raise self.retry(countdown=HELD_RETRY_S)
        if execute.finish_if_complete(ctx.db, ctx.clock, job_id):
            log.info("job %s done", job_id)
            ctx.run(_callback(ctx, job_id))
        elif report.job_status in FINISHED and delivery.callback_pending(ctx.db, job_id):
            # Delivered again after the worker that finished the job stopped before its
            # callback went out (acks_late): sent now rather than at the next sweep
            # (claimed first, so never while another process sends it).
            log.info("job %s finished; sending the callback a stopped worker did not", job_id)
            ctx.run(_callback(ctx, job_id))

    return run_chunk


async def _callback(ctx: WorkerContext, job_id: str) -> None:
    await delivery.send_callback(
        ctx.db,
        ctx.fetcher,
        job_id,
        clock=ctx.clock,
        policy=delivery.CallbackPolicy.from_settings(ctx.settings),
    )
