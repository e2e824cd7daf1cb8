"""The :class:`JobDispatcher` boundary: what the API calls to get a submitted job going.

Two implementations: :class:`cartag.jobs.runner.JobRunner` runs jobs inside the API
process (the default), :class:`cartag.jobs.dispatch.CeleryDispatcher` hands their
chunks to ``cartag worker`` processes through a broker
(:func:`cartag.jobs.dispatch.build_dispatcher` picks one from the settings).
"""

from __future__ import annotations

from collections.abc import Sequence

from cartag.clock import Clock
from cartag.store import jobs as job_repo
from cartag.store.db import Database
from cartag.store.tables import JobRow


class JobDispatcher:
    """Takes submitted jobs; runs them itself or hands them to workers.

    Args:
        db: The store the job and its items are written to.
        clock: Time source.
    """

    def __init__(self, db: Database, clock: Clock) -> None:
        self.db = db
        self.clock = clock

    def submit(
        self,
        advertiser_id: str,
        items: Sequence[tuple[str, str | None]],
        callback_url: str | None,
        *,
        owner_key_id: int | None = None,
    ) -> JobRow:
        """Store a job of ``(url, scrape_color)`` items and get it going; returns at once.

        ``owner_key_id`` is the submitting API key: the one that may read the job.
        """
        with self.db.write() as session:
            job = job_repo.create_job(
                session,
                advertiser_id=advertiser_id,
                items=items,
                callback_url=callback_url,
                now=self.clock.now(),
                owner_key_id=owner_key_id,
            )
        self._dispatch(job.id, job.total)
        return job

    def _dispatch(self, job_id: str, total: int) -> None:
        raise NotImplementedError

    def start(self) -> None:
        """Pick up jobs a previous process left unfinished."""

    async def stop(self) -> None:
        """Stop whatever :meth:`start` started."""
