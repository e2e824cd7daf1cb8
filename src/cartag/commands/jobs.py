"""``cartag jobs``: what an operator does to a job without an API key.

``cartag jobs cancel JOB_ID`` is ``POST /v1/jobs/{id}/cancel`` for whoever runs the
service: the job ends ``failed`` with ``error: "cancelled by <--by>"``, keeps the results
stored so far, and no other chunk of it starts.
"""

from __future__ import annotations

from typing import Annotated

import typer

from cartag.commands.common import err, fail, load_settings, open_database
from cartag.errors import CartagError, ConflictError, InputError

app = typer.Typer(help="Jobs: cancel one that is queued or running.", no_args_is_help=True)

# Who the job's error names when --by is not given (the API names the key).
DEFAULT_BY = "the command line"


@app.command("cancel")
def cancel(
    job_id: Annotated[str, typer.Argument(help="The job to stop (its id, as POST /v1/jobs gave).")],
    by: Annotated[
        str,
        typer.Option(
            help="Who cancels, recorded in the job's error: 'cancelled by <this>'.",
        ),
    ] = DEFAULT_BY,
) -> None:
    """Stop a queued or running job, as POST /v1/jobs/{id}/cancel does.

    It ends failed with error "cancelled by <--by>"; the results stored so far stay
    readable, the chunk being classified finishes and no other starts. Its callback, if it
    has one, is sent by the next sweep of a server or worker (at most a minute).
    Exits 0 once cancelled, 1 when the job has finished already, 2 for an unknown id or
    bad input.
    """
    from cartag.clock import SystemClock
    from cartag.store import jobs as job_repo

    if "\x00" in job_id:
        raise fail(InputError("JOB_ID holds a NUL character: give the job's id", field="job_id"))
    if not by.strip() or "\x00" in by or len(by) > 128:
        raise fail(InputError("--by must be 1-128 characters of text", field="by"))
    db = open_database(load_settings())
    try:
        with db.write() as session:
            job = job_repo.cancel_job(session, job_id, now=SystemClock().now(), by=by)
            done, total, has_callback = job.done, job.total, bool(job.callback_url)
    except ConflictError as exc:
        # The job ended on its own: nothing is wrong with the command, but it did not cancel.
        err.print(f"[red]error:[/red] {exc.message}")
        raise typer.Exit(1) from exc
    except CartagError as exc:
        raise fail(exc) from exc
    finally:
        db.dispose()
    typer.echo(f"job {job_id} cancelled: failed, {done} of {total} images answered (kept)")
    if has_callback:
        err.print("its callback is sent by the next sweep of a server or worker (within a minute)")
