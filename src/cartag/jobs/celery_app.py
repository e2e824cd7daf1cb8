"""The Celery app, built from settings (never at import time). Imported only when
``CARTAG_BROKER_URL`` is set: by the API to send chunk tasks, by ``cartag worker`` to run them.

Delivery is at least once and results are stored at most once (see
:mod:`cartag.jobs.execute`): tasks are acknowledged after they ran (``acks_late``),
a worker takes one task at a time (prefetch 1), and a task whose worker died is
delivered again once ``CARTAG_BROKER_VISIBILITY_TIMEOUT_S`` has passed.
"""

from __future__ import annotations

from typing import Any

from celery import Celery

from cartag.settings import Settings

CHUNK_TASK = "cartag.jobs.run_chunk"


def make_celery(settings: Settings) -> Any:
    """A Celery app on ``settings.broker_url`` with cartag's delivery guarantees.

    Returns:
        The ``celery.Celery`` app (typed Any: Celery ships no type hints).
    """
    app = Celery("cartag", broker=settings.broker_url, set_as_current=False)
    app.conf.update(
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        task_default_queue=settings.celery_queue,
        task_ignore_result=True,
        task_serializer="json",
        accept_content=["json"],
        broker_connection_retry_on_startup=True,
        broker_transport_options=transport_options(settings),
        worker_hijack_root_logger=True,
        worker_redirect_stdouts=False,
        # Progress lives in the database; nothing needs task events or a result backend.
        worker_send_task_events=False,
    )
    return app


def transport_options(settings: Settings) -> dict[str, float]:
    """Redis transport options: how soon a dead worker's task is delivered again.

    Kombu sweeps for expired unacknowledged tasks every ``interval x throttle``
    seconds (100 s by default); sweeping at a quarter of the visibility timeout
    (1-10 s) bounds the redelivery delay by about 1.25 x the timeout.
    """
    timeout = settings.broker_visibility_timeout_s
    return {
        "visibility_timeout": timeout,
        "unacked_restore_interval": max(1.0, min(10.0, timeout / 4)),
        "unacked_restore_throttle": 1,
    }
