"""``cartag advertisers set``: the adaptation switch (on, off, back to the default)."""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from cartag.cli import app
from cartag.store import advertisers as repo
from cartag.store.db import Database


def _own_setting(tmp_path: Path, advertiser: str) -> bool | None:
    db = Database(f"sqlite:///{tmp_path / 'data' / 'cartag.db'}")
    try:
        with db.read() as session:
            return repo.adaptation_setting(session, advertiser)
    finally:
        db.dispose()


def test_the_adaptation_switch_from_the_command_line(tmp_path: Path) -> None:
    env = {"CARTAG_DATA_DIR": str(tmp_path / "data"), "CARTAG_ADVERTISER_ADAPTATION": "false"}
    runner = CliRunner()
    on = runner.invoke(app, ["advertisers", "set", "42", "--adapt-answers"], env=env)
    assert on.exit_code == 0, on.output
    assert "adapted to its fixes: on (its own setting)" in on.output
    assert _own_setting(tmp_path, "42") is True
    kept = runner.invoke(app, ["advertisers", "set", "42", "--reclassify-on-promote"], env=env)
    assert kept.exit_code == 0 and _own_setting(tmp_path, "42") is True
    off = runner.invoke(app, ["advertisers", "set", "42", "--no-adapt-answers"], env=env)
    assert off.exit_code == 0 and _own_setting(tmp_path, "42") is False
    default = runner.invoke(app, ["advertisers", "set", "42", "--adapt-default"], env=env)
    assert default.exit_code == 0 and "off (the default)" in default.output
    assert _own_setting(tmp_path, "42") is None
    listed = runner.invoke(app, ["advertisers", "list"], env={**env, "COLUMNS": "200"})
    assert "off (the default)" in listed.stdout

    both = runner.invoke(
        app, ["advertisers", "set", "42", "--adapt-answers", "--adapt-default"], env=env
    )
    assert both.exit_code == 2 and "not two" in both.output
    nothing = runner.invoke(app, ["advertisers", "set", "42"], env=env)
    assert nothing.exit_code == 2 and "--adapt-answers" in nothing.output
