"""The :class:`JobDispatcher` boundary: what the API calls to get a submitted job going.

Two implementations: :class:`cartag.jobs.runner.JobRunner` runs jobs inside the API
process (the default), :class:`cartag.jobs.dispatch.CeleryDispatcher` hands their
chunks to ``cartag worker`` processes through a broker
(:func:`cartag.jobs.dispatch.build_dispatcher` picks one from the settings).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from cartag.clock import Clock
from cartag.errors import QueueUnavailableError
from cartag.imaging.keys import storable_url
from cartag.pipeline.results import skipped
from cartag.store import jobs as job_repo
from cartag.store.db import Database
from cartag.store.tables import JobRow


def storable_items(
    items: Sequence[tuple[str, str | None]],
) -> tuple[list[tuple[str, str | None]], dict[int, dict[str, Any]]]:
    """The items as the store can keep them, and the results of those answered already.

    PostgreSQL's text cannot hold a NUL character, no UTF-8 text a lone surrogate, and
    a URL with either is an ``invalid_url`` whenever it is classified: such an item is
    stored percent-encoded (:func:`cartag.imaging.keys.storable_url`), with its skipped
    result at once (the URL as sent, a surrogate as U+FFFD), so that one bad URL never
    fails the job.

    Returns:
        ``(items to store, {index: result})``.
    """
    stored: list[tuple[str, str | None]] = []
    answered: dict[int, dict[str, Any]] = {}
    for idx, (url, color) in enumerate(items):
        keep = storable_url(url)
        if keep != url:
            answered[idx] = skipped(url, "invalid_url").to_dict()
        stored.append((keep, color))
    return stored, answered


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

        Raises:
            QueueUnavailableError: Its work could not be handed on; the job is not kept
                (a client that sends it again gets one job, not an orphan and a copy).
        """
        stored, answered = storable_items(items)
        with self.db.write() as session:
            job = job_repo.create_job(
                session,
                advertiser_id=advertiser_id,
                items=stored,
                callback_url=callback_url,
                now=self.clock.now(),
                owner_key_id=owner_key_id,
                results=answered,
            )
        try:
            self._dispatch(job.id, job.total)
        except QueueUnavailableError:
            with self.db.write() as session:
                job_repo.delete_job(session, job.id)
            raise
        return job

    def _dispatch(self, job_id: str, total: int) -> None:
        raise NotImplementedError

    def ended(self, job_id: str) -> None:
        """A job ended outside the workers (cancelled): send its callback if this
        process sends callbacks; otherwise the next sweep of a worker does."""

    def start(self) -> None:
        """Pick up jobs a previous process left unfinished."""

    async def stop(self) -> None:
        """Stop whatever :meth:`start` started."""
