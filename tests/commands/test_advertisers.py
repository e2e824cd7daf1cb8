"""``cartag advertisers set``: the adaptation switch (on, off, back to the default)."""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from cartag.cli import app
from cartag.store import advertisers as repo
from cartag.store.db import Database, upgrade
from tests.support.factories import NOW


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


def test_the_list_pages_and_searches_like_the_api(tmp_path: Path) -> None:
    # It printed every advertiser (20,000: a 2.3 MB table in 8.5 s).
    db = Database(f"sqlite:///{tmp_path / 'data' / 'cartag.db'}")
    try:
        upgrade(db)
        with db.write() as session:
            for n in range(130):
                repo.set_advertiser(session, f"dealer-{n:03d}", reclassify_on_promote=True, now=NOW)
    finally:
        db.dispose()
    env = {"CARTAG_DATA_DIR": str(tmp_path / "data"), "COLUMNS": "200"}
    runner = CliRunner()

    first = runner.invoke(app, ["advertisers", "list"], env=env)
    assert first.exit_code == 0, first.output
    assert "dealer-099" in first.stdout and "dealer-100" not in first.stdout
    assert "advertisers 1–100 of 130 (page 1 of 2); --page N for another" in first.stderr
    second = runner.invoke(app, ["advertisers", "list", "--page", "2", "--limit", "20"], env=env)
    assert "dealer-020" in second.stdout and "dealer-039" in second.stdout
    assert "dealer-019" not in second.stdout and "dealer-040" not in second.stdout
    assert "advertisers 21–40 of 130 (page 2 of 7)" in second.stderr
    searched = runner.invoke(app, ["advertisers", "list", "--search", "DEALER-12"], env=env)
    rows = [line for line in searched.stdout.splitlines() if "dealer-" in line]
    assert [row.split()[1] for row in rows] == [f"dealer-12{n}" for n in range(10)]
    assert "advertisers 1–10 of 10 whose id holds 'DEALER-12' (page 1 of 1)" in searched.stderr
    nobody = runner.invoke(app, ["advertisers", "list", "--search", "[red]x"], env=env)
    assert nobody.exit_code == 0 and "no advertisers whose id holds '[red]x'" in nobody.stderr

    too_many = runner.invoke(app, ["advertisers", "list", "--limit", "501"], env=env)
    assert too_many.exit_code == 2 and "--limit is at most 500" in too_many.stderr
    assert runner.invoke(app, ["advertisers", "list", "--page", "0"], env=env).exit_code == 2
