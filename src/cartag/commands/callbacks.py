"""``cartag callbacks``: the secret that signs job callbacks, and the callbacks not delivered.

``cartag callbacks failed`` lists the finished jobs whose callback did not get through
(after its retries) or was never sent; ``cartag callbacks redeliver JOB_ID`` sends one
again now.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer

from cartag.commands.common import err, fail, load_settings, open_database
from cartag.errors import CartagError, InputError

if TYPE_CHECKING:
    from cartag.store.tables import JobRow

app = typer.Typer(
    help="Job callbacks: the signing secret, and those not delivered.", no_args_is_help=True
)


@app.command("secret")
def secret() -> None:
    """Print the callback signing secret (generated on first use unless configured).

    It is ``CARTAG_CALLBACK_SECRET`` when set, else the deployment's own secret, kept in
    the database. Give it to whoever verifies the ``X-Cartag-Signature`` header.
    """
    from cartag.clock import SystemClock
    from cartag.jobs.callbacks import callback_secret

    settings = load_settings()
    try:
        value = callback_secret(open_database(settings), settings.callback_secret, SystemClock())
    except CartagError as exc:
        raise fail(exc) from exc
    source = "CARTAG_CALLBACK_SECRET" if settings.callback_secret else "the database"
    err.print(f"callback signing secret (from {source}); keep it private:")
    typer.echo(value)


@app.command("failed")
def failed(
    limit: Annotated[int, typer.Option(min=1, max=10_000, help="Show at most this many.")] = 100,
) -> None:
    """List finished jobs whose callback was not delivered, newest first.

    Status ``pending`` means it was never sent (or a process stopped between its
    attempts): a server sends it when it next starts. Exits 0 (nothing to list too).
    """
    from cartag.redaction import redact_url
    from cartag.store import jobs as job_repo

    db = open_database(load_settings())
    try:
        with db.read() as session:
            rows = [
                (
                    job.id,
                    job.status,
                    job.callback_status or "pending",
                    job.finished_at.isoformat() if job.finished_at else "-",
                    redact_url(job.callback_url or ""),
                )
                for job in job_repo.failed_callbacks(session, limit=limit)
            ]
    finally:
        db.dispose()
    if not rows:
        err.print("every finished job's callback was delivered")
        return
    typer.echo("job_id\tjob_status\tcallback_status\tfinished_at\tcallback_url")
    for row in rows:
        typer.echo("\t".join(row))


@app.command("redeliver")
def redeliver(
    job_id: Annotated[str, typer.Argument(help="The job whose callback to send again.")],
    url: Annotated[
        str | None,
        typer.Option(
            help="Send to this URL instead of the stored one (which keeps no token once "
            "its callback was tried: give it again in full)."
        ),
    ] = None,
    attempts: Annotated[
        int,
        typer.Option(min=1, max=10, help="Attempts if the receiver fails (2 s apart, doubling)."),
    ] = 1,
) -> None:
    """Send a finished job's callback again now.

    Exits 0 once delivered, 1 when the receiver still refuses it, 2 on bad input.
    """
    import asyncio

    from cartag.clock import SystemClock
    from cartag.jobs.execute import send_callback
    from cartag.net.fetch import Fetcher
    from cartag.store import jobs as job_repo

    settings = load_settings()
    db = open_database(settings)
    try:
        with db.write() as session:
            job = job_repo.get_job(session, job_id)
            _check_redeliverable(job, url)
            if url is not None:
                # Sent again at a server's start should this process stop first.
                status = job_repo.CALLBACK_RETRYING + "redeliver"
                job_repo.set_callback_status(session, job_id, status, callback_url=url)

        async def send() -> str | None:
            async with Fetcher(settings) as fetcher:
                return await send_callback(
                    db,
                    fetcher,
                    job_id,
                    clock=SystemClock(),
                    secret=settings.callback_secret,
                    attempts=attempts,
                )

        outcome = asyncio.run(send())
    except CartagError as exc:
        raise fail(exc) from exc
    finally:
        db.dispose()
    typer.echo(f"job {job_id} callback: {outcome}")
    if outcome is None or not outcome.startswith("delivered:"):
        raise typer.Exit(1)


def _check_redeliverable(job: JobRow, url: str | None) -> None:
    from cartag.store import jobs as job_repo

    if job.status not in (job_repo.DONE, job_repo.FAILED):
        raise InputError(
            f"job {job.id} is {job.status}: its callback is sent when it finishes", field="job_id"
        )
    if url is not None:
        if not url.lower().startswith(("http://", "https://")):
            raise InputError(f"--url must be an http(s) URL, got {url!r}", field="url")
        return
    if not job.callback_url:
        raise InputError(
            f"job {job.id} has no callback URL; give one with --url", field="callback_url"
        )
    if "***" in job.callback_url:
        raise InputError(
            f"job {job.id}'s stored callback URL lost its token or password after the last "
            f"attempt ({job.callback_url}); give the full URL with --url",
            field="callback_url",
        )
