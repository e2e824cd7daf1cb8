"""``cartag callbacks``: the secret that signs job callbacks, and the callbacks not delivered.

``cartag callbacks failed`` lists the finished jobs whose callback did not get through
(after its retries) or was never sent; ``cartag callbacks redeliver JOB_ID`` sends one
again now, and ``redeliver --pending`` those no process is sending.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer

from cartag.commands.common import err, fail, load_settings, open_database
from cartag.errors import CartagError, ConflictError, InputError

if TYPE_CHECKING:
    import datetime as dt

    from cartag.net.fetch import Fetcher
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

    Status ``pending`` means it was never sent: a server or worker sends it at its next
    sweep (at start and every minute). One a process is sending shows until when it holds
    it (another takes it over after that).
    Exits 0 (nothing to list too).
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
                    _shown_status(job.callback_status),
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


def _shown_status(status: str | None) -> str:
    from cartag.store import jobs as job_repo

    until = job_repo.callback_claimed_until(status)
    if until is None:
        return status or "pending"
    visible = job_repo.visible_callback_status(status) or "pending"
    return f"{visible} (being sent, held until {until.isoformat()})"


@app.command("redeliver")
def redeliver(
    job_id: Annotated[
        str | None,
        typer.Argument(help="The job whose callback to send again (or --pending)."),
    ] = None,
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
    pending: Annotated[
        bool,
        typer.Option(
            "--pending",
            help="Instead of one job: send every callback no process is sending now.",
        ),
    ] = False,
) -> None:
    """Send a finished job's callback again now, or (--pending) those left unsent.

    The callback is claimed first, so a server or worker never sends it at the same
    time. Exits 0 once delivered (--pending: once every one was), 1 when the receiver
    still refuses it or another process is sending it, 2 on bad input.
    """
    import asyncio

    from cartag.clock import SystemClock
    from cartag.jobs.delivery import CallbackPolicy, send_callback, send_pending_callbacks
    from cartag.net.fetch import Fetcher
    from cartag.store import jobs as job_repo

    if pending and url is not None:
        raise fail(
            InputError(
                "--url goes with one JOB_ID; --pending sends each job to its own URL",
                field="url",
            )
        )
    if (job_id is None) == (not pending):
        raise fail(
            InputError(
                "give a JOB_ID, or --pending (every callback no process is sending), not both",
                field="job_id",
            )
        )
    settings = load_settings()
    db = open_database(settings)
    clock = SystemClock()
    policy = CallbackPolicy.from_settings(settings, attempts=attempts)
    try:
        if job_id is None:

            async def sweep() -> int:
                async with Fetcher(settings) as fetcher:
                    return await send_pending_callbacks(db, fetcher, clock=clock, policy=policy)

            with db.read() as session:
                tried = [job for job, _ in job_repo.pending_callbacks(session, since=None)]
            sent = asyncio.run(sweep())
            # Only those this sweep was for: callbacks that failed for good (failed:*)
            # are not retried by --pending, and must not make every later run exit 1.
            with db.read() as session:
                left = len(job_repo.failed_callbacks(session, limit=len(tried) + 1, job_ids=tried))
        else:
            with db.read() as session:
                _check_redeliverable(job_repo.get_job(session, job_id), url, clock.now())

            async def send() -> str | None:
                async with Fetcher(settings) as fetcher:
                    if url is not None:
                        await _check_address(fetcher, url)
                    return await send_callback(
                        db, fetcher, job_id, clock=clock, policy=policy, again=True, url=url
                    )

            outcome = asyncio.run(send())
    except ConflictError as exc:
        # Not bad input: the same command succeeds once the other process is done.
        err.print(f"[red]error:[/red] {exc.message}")
        raise typer.Exit(1) from exc
    except CartagError as exc:
        raise fail(exc) from exc
    finally:
        db.dispose()
    if job_id is None:
        typer.echo(f"sent {sent} callback(s); {left} not delivered (cartag callbacks failed)")
        if left:
            raise typer.Exit(1)
        return
    if outcome is None:
        err.print(
            f"job {job_id}'s callback is being sent by another process right now; see "
            "`cartag callbacks failed`, and try again once it is done"
        )
        raise typer.Exit(1)
    typer.echo(f"job {job_id} callback: {outcome}")
    if not outcome.startswith("delivered:"):
        raise typer.Exit(1)


async def _check_address(fetcher: Fetcher, url: str) -> None:
    """The API's address guard for a callback URL, before the job's record changes."""
    from cartag.errors import FetchError
    from cartag.redaction import redact_url

    try:
        await fetcher.check_address(url)
    except FetchError as exc:
        raise InputError(
            f"--url is refused ({exc.reason}): {redact_url(exc.message)}", field="url"
        ) from None


def _check_redeliverable(job: JobRow, url: str | None, now: dt.datetime) -> None:
    from cartag.store import jobs as job_repo

    if job.status not in (job_repo.DONE, job_repo.FAILED):
        raise InputError(
            f"job {job.id} is {job.status}: its callback is sent when it finishes", field="job_id"
        )
    until = job_repo.callback_claimed_until(job.callback_status)
    if until is not None and until > now:
        raise ConflictError(
            f"job {job.id}'s callback is being sent by another process (it holds it until "
            f"{until.isoformat()}); see `cartag callbacks failed`, and try again once it is done"
        )
    if url is not None:
        from cartag.errors import FetchError
        from cartag.imaging.keys import request_url

        try:
            request_url(url)  # parses, refuses control characters: nothing is stored yet
        except FetchError as exc:
            raise InputError(
                f"--url {url!r} is not a usable http(s) URL: {exc.message}", field="url"
            ) from None
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
