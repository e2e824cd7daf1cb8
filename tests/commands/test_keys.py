"""``cartag keys``: scoped keys (one or more advertisers), and what may not be scoped."""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from cartag.cli import app
from cartag.settings import Settings
from cartag.store import apikeys
from cartag.store.db import Database


def test_keys_scoped_to_advertisers(tmp_path: Path) -> None:
    env = {"CARTAG_DATA_DIR": str(tmp_path / "data")}
    runner = CliRunner()
    created = runner.invoke(
        app,
        [
            "keys", "create", "--role", "fixer", "--name", "dana",
            "--advertiser", "dealer-42", "--advertiser", "dealer-7",
        ],
        env=env,
    )  # fmt: skip
    assert created.exit_code == 0, created.output
    assert "scoped to dealer-42, dealer-7" in created.stderr
    key = created.stdout.strip().splitlines()[-1]
    listed = runner.invoke(app, ["keys", "list"], env={**env, "COLUMNS": "200"})
    assert listed.exit_code == 0
    dana = next(line for line in listed.stdout.splitlines() if "dana" in line)
    assert "dealer-42, dealer-7" in dana
    db = Database(Settings(data_dir=tmp_path / "data").resolved_database_url)
    try:
        with db.read() as session:
            principal = apikeys.authenticate(session, key)
    finally:
        db.dispose()
    assert principal.advertisers == {"dealer-42", "dealer-7"}


def test_what_cannot_be_scoped_exits_2_with_a_message(tmp_path: Path) -> None:
    env = {"CARTAG_DATA_DIR": str(tmp_path / "data")}
    runner = CliRunner()
    admin = runner.invoke(
        app, ["keys", "create", "--role", "admin", "--advertiser", "dealer-42"], env=env
    )
    assert admin.exit_code == 2 and "create that key without --advertiser" in admin.output
    bad = runner.invoke(
        app, ["keys", "create", "--role", "fixer", "--advertiser", "dealer 42"], env=env
    )
    assert bad.exit_code == 2 and "'dealer 42' is not an advertiser id" in bad.output
    assert "ctg_" not in bad.output + admin.output
