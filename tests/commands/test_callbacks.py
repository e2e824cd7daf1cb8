"""``cartag callbacks secret``: the secret receivers verify callbacks with."""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from cartag.cli import app


def test_the_secret_is_generated_once_unless_configured(tmp_path: Path) -> None:
    env = {"CARTAG_DATA_DIR": str(tmp_path / "data")}
    runner = CliRunner()
    first = runner.invoke(app, ["callbacks", "secret"], env=env)
    assert first.exit_code == 0, first.output
    secret = first.stdout.strip().splitlines()[-1]
    assert len(secret) == 64 and int(secret, 16) >= 0
    again = runner.invoke(app, ["callbacks", "secret"], env=env)
    assert again.stdout.strip().splitlines()[-1] == secret
    configured = runner.invoke(
        app, ["callbacks", "secret"], env=env | {"CARTAG_CALLBACK_SECRET": "from-env"}
    )
    assert configured.stdout.strip().splitlines()[-1] == "from-env"
