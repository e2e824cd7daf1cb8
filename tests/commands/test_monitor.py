"""``cartag monitor report``: the monitor's figures on the command line."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cartag.cli import app
from cartag.store.db import Database, upgrade
from tests.support.monitoring import TODAY, seed_monitoring


@pytest.fixture
def env(tmp_path: Path) -> Iterator[dict[str, str]]:
    data = tmp_path / "data"
    db = Database(f"sqlite:///{data / 'cartag.db'}")
    upgrade(db)
    seed_monitoring(db)
    db.dispose()
    yield {"CARTAG_DATA_DIR": str(data), "COLUMNS": "220"}


def test_report_prints_tables_with_flagged_advertisers(env: dict[str, str]) -> None:
    result = CliRunner().invoke(
        app, ["monitor", "report", "--since", "7d", "--until", TODAY.isoformat()], env=env
    )
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert "2026-11-19 → 2026-11-26" in out and "2 advertiser(s) flagged" in out
    assert "▲ jumpy" in out and "▲ newcomer" in out and "▲ steady" not in out
    assert out.index("▲ jumpy") < out.index("steady")
    # Today, model m2: 950 answers, 58 fixes.
    today = next(line for line in out.splitlines() if "2026-11-26" in line and "m2" in line)
    assert "950" in today and "58" in today and "6.11%" in today
    assert "Dealer 67% Placeholder 33%" in today
    assert "Flagged: flagged when, over the last 2 day(s)" in out


def test_report_as_json(env: dict[str, str]) -> None:
    result = CliRunner().invoke(
        app,
        ["monitor", "report", "--since", "24h", "--until", TODAY.isoformat(), "--json"],
        env=env,
    )
    assert result.exit_code == 0, result.output
    body = json.loads(result.stdout)
    assert body["since"] == "2026-11-25" and body["until"] == "2026-11-26"
    flagged = [a["advertiser_id"] for a in body["advertisers"] if a["jumped"]]
    assert flagged == ["jumpy", "newcomer"]
    jumpy = body["advertisers"][0]
    assert jumpy["recent"] == {"classified": 600, "fixes": 60, "rate": 0.1}
    assert "baseline" in body["rule"]


def test_one_advertiser_and_limit(env: dict[str, str]) -> None:
    result = CliRunner().invoke(
        app,
        ["monitor", "report", "--until", TODAY.isoformat(), "--advertiser", "steady"],
        env=env,
    )
    assert result.exit_code == 0, result.output
    assert "advertiser steady" in result.stdout and "jumpy" not in result.stdout
    limited = CliRunner().invoke(
        app, ["monitor", "report", "--until", TODAY.isoformat(), "--limit", "1"], env=env
    )
    assert "3 more advertisers" in limited.stdout


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["--since", "lastweek"], "neither a period nor a date"),
        (["--since", "0d"], "positive"),
        (["--since", "\u0663d", "--until", "2026-11-26"], "YYYY-MM-DD"),
        (["--since", "20261120", "--until", "2026-11-26"], "neither a period nor a date"),
        (["--since", "2026-W47-1", "--until", "2026-11-26"], "neither a period nor a date"),
        (["--until", "soon"], "is not a date"),
        (["--since", "2030-01-01", "--until", "2026-11-26"], "after the report's last day"),
        # An advertiser id no request could carry: an empty report, or for "" an
        # unrestricted one, used to be printed with exit 0.
        (["--advertiser", "dealer 42"], "--advertiser 'dealer 42' is not an advertiser id"),
        (["--advertiser", ""], "--advertiser is empty"),
    ],
)
def test_bad_options_exit_2_with_a_message(
    env: dict[str, str], args: list[str], words: str
) -> None:
    result = CliRunner().invoke(app, ["monitor", "report", *args], env=env)
    assert result.exit_code == 2 and words in result.output
    assert "Traceback" not in result.output


def test_report_shows_drift_of_a_shifted_advertiser(tmp_path: Path) -> None:
    import datetime as dt

    from tests.support.drift import START, day_answers, seed_days, week

    data = tmp_path / "data"
    db = Database(f"sqlite:///{data / 'cartag.db'}")
    upgrade(db)
    today = START + dt.timedelta(days=20)
    for adv in ("shifted", "steady"):
        seed_days(db, adv, week(), day_answers(100, "m1"))
    seed_days(db, "shifted", [today], day_answers(100, "m1", far_share=0.6, confidence=0.8))
    seed_days(db, "steady", [today], day_answers(100, "m1"))
    db.dispose()
    env = {"CARTAG_DATA_DIR": str(data), "COLUMNS": "250"}
    args = ["monitor", "report", "--since", "2d", "--until", today.isoformat()]
    result = CliRunner().invoke(app, args, env=env)
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert "Drift (the current window" in out
    shifted = next(line for line in out.splitlines() if "shifted" in line and "m1" in line)
    steady = next(line for line in out.splitlines() if "steady" in line and "m1" in line)
    assert "drift" in shifted and "60.0% (5.0%)" in shifted
    assert "drift" not in steady and "ok" in steady

    body = json.loads(CliRunner().invoke(app, [*args, "--json"], env=env).stdout)
    states = {row["advertiser_id"]: row["state"] for row in body["drift"]}
    assert states["shifted"] == "drift" and states["steady"] == "ok"
    (row,) = [row for row in body["drift"] if row["advertiser_id"] == "shifted"]
    assert row["far_share"] == pytest.approx(0.6) and row["reasons"]

    # --limit bounds the advertiser rows (most drifted first); the version's row stays.
    limited = CliRunner().invoke(app, [*args, "--json", "--limit", "1"], env=env)
    rows = json.loads(limited.stdout)["drift"]
    assert [(r["version"], r["advertiser_id"]) for r in rows] == [("m1", None), ("m1", "shifted")]
