"""``cartag worker``: a Celery worker process that runs job chunks.

It loads the model once, then takes one chunk task at a time from the broker
(``CARTAG_BROKER_URL``) and writes results to the shared PostgreSQL database.
Run as many as the machine has cores for the model; kill one and its chunk is
delivered to another after ``CARTAG_BROKER_VISIBILITY_TIMEOUT_S``.
Each also sends the job callbacks no process is sending (a worker died before or while
sending them), at start and every minute (:mod:`cartag.jobs.sweeper`).
"""

from __future__ import annotations

import logging
from typing import Annotated

import typer

from cartag.commands.common import err, fail, load_settings
from cartag.errors import CartagError
from cartag.logs import check_log_level
from cartag.settings import Settings

app = typer.Typer(help="Run a Celery worker for jobs (needs CARTAG_BROKER_URL).")
log = logging.getLogger(__name__)


@app.callback(invoke_without_command=True)
def worker(
    loglevel: Annotated[str, typer.Option(help="Log level: debug, info, warning.")] = "info",
    hostname: Annotated[
        str | None, typer.Option(help="Worker name, e.g. w1@%h (default: Celery's).")
    ] = None,
) -> None:
    """Take job chunks from the broker and classify them (one at a time per process)."""
    from cartag.jobs.dispatch import check_broker_settings

    try:
        loglevel = check_log_level(loglevel, "--loglevel")
    except CartagError as exc:
        raise fail(exc) from exc

    settings = load_settings()
    if not settings.broker_url:
        err.print(
            "[red]error:[/red] CARTAG_BROKER_URL is not set; a worker needs the broker the API "
            "sends jobs to, e.g. CARTAG_BROKER_URL=redis://127.0.0.1:6379/0"
        )
        raise typer.Exit(2)
    try:
        check_broker_settings(settings)
    except CartagError as exc:
        err.print(f"[red]error:[/red] {exc.message}")
        raise typer.Exit(2) from exc
    run_worker(settings, loglevel=loglevel, hostname=hostname)


def run_worker(settings: Settings, *, loglevel: str = "info", hostname: str | None = None) -> None:
    """Load the model, register the chunk task and consume until stopped."""
    from celery.signals import after_setup_logger

    from cartag.blas import limit_blas_threads
    from cartag.jobs.celery_app import make_celery
    from cartag.jobs.sweeper import CallbackSweeper
    from cartag.jobs.tasks import register_tasks
    from cartag.jobs.worker import WorkerContext
    from cartag.memory import freeze_startup_objects, limit_malloc_arenas

    limit_malloc_arenas(settings.malloc_arenas)  # before the model's threads start
    limit_blas_threads(settings.blas_threads)
    try:
        context = WorkerContext.from_settings(settings)
    except CartagError as exc:
        err.print(f"[red]error:[/red] {exc.message}")
        raise typer.Exit(2) from exc
    freeze_startup_objects()  # the model is loaded
    if settings.worker_metrics_port is not None:
        try:
            port = context.serve_metrics(settings.worker_metrics_port)
        except OSError as exc:
            err.print(
                f"[red]error:[/red] cannot serve the worker's metrics on port "
                f"{settings.worker_metrics_port} ({exc.strerror or exc}): set "
                "CARTAG_WORKER_METRICS_PORT to a free port (0: any), or unset it"
            )
            raise typer.Exit(2) from exc
        err.print(f"worker metrics on http://0.0.0.0:{port}/metrics")
    celery = make_celery(settings)
    register_tasks(celery, lambda: context)
    # Celery installs log handlers of its own: they redact URL passwords and tokens too.
    after_setup_logger.connect(_redact_celery_logs, weak=False)
    argv = [
        "worker",
        "--pool=solo",  # the model and its event loop live in this process
        "--concurrency=1",
        f"--loglevel={loglevel.upper()}",
        f"--queues={settings.celery_queue}",
        "--without-gossip",
        "--without-mingle",
        "--prefetch-multiplier=1",
    ]
    if hostname:
        argv.append(f"--hostname={hostname}")
    sweeper = CallbackSweeper(settings, context.db, context.clock)
    sweeper.start()
    context.callbacks = sweeper
    try:
        celery.worker_main(argv)
    finally:
        sweeper.stop()
        context.close()


def _redact_celery_logs(logger: logging.Logger, **_: object) -> None:
    from cartag.redaction import redact_handlers

    redact_handlers(logger)
