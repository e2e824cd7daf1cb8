"""Plain factory functions for store rows."""

from __future__ import annotations

import datetime as dt
import itertools
from typing import Any

from cartag.store import images as image_repo
from cartag.store.db import Database

NOW = dt.datetime(2026, 11, 26, 12, 0, tzinfo=dt.UTC)
_counter = itertools.count()


def new_image(**overrides: Any) -> image_repo.NewImage:
    n = next(_counter)
    values: dict[str, Any] = {
        "image_key": f"v1:{n:064x}",
        "url": f"https://cdn.example/{n}.jpg",
        "content_sha256": f"{n:064x}",
        "phash": f"{n:016x}",
        "width": 640,
        "height": 480,
        "byte_size": 12345,
        "image_type": "Dealer",
        "color": "Red",
        "type_scores": {"Dealer": 0.9, "Stock": 0.08, "Placeholder": 0.02},
        "color_scores": {"Red": 0.8, "Black": 0.2},
        "confidence": 0.9,
        "model_version": "test-model",
    }
    values.update(overrides)
    return image_repo.NewImage(**values)


def add_image(db: Database, **overrides: Any) -> image_repo.NewImage:
    """Store an image row and return what was stored."""
    image = new_image(**overrides)
    with db.write() as session:
        image_repo.save_image(session, image, NOW)
    return image


def finished_job(
    db: Database,
    callback_url: str | None,
    *,
    status: str = "done",
    callback_status: str | None = None,
    now: dt.datetime = NOW,
) -> str:
    """A job of one item in ``status`` (``queued`` leaves it unfinished), its callback as
    ``callback_status`` says (None: not sent, as a process leaves it that stopped first).
    Returns the job's id."""
    from cartag.store import jobs as job_repo

    with db.write() as session:
        job = job_repo.create_job(
            session,
            advertiser_id="a",
            items=[("https://cdn.example/1.jpg", None)],
            callback_url=callback_url,
            now=now,
            results={0: {"url": "https://cdn.example/1.jpg", "status": "skipped"}},
        )
        if status != job_repo.QUEUED:
            job_repo.finish_job(session, job.id, status=status, now=now)
        if callback_status is not None:
            job_repo.set_callback_status(session, job.id, callback_status)
        return job.id
