"""``cartag callbacks secret``: the secret that signs job callbacks, for their receivers."""

from __future__ import annotations

import typer

from cartag.commands.common import err, fail, load_settings, open_database
from cartag.errors import CartagError

app = typer.Typer(help="Job callbacks: the signing secret.", no_args_is_help=True)


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
