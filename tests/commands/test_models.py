"""``cartag models`` and ``cartag advertisers``: the registry from the command line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cartag.cli import app
from cartag.deploy import registry
from cartag.models.classifier import BUNDLED_DIR, read_config
from cartag.store import model_versions
from cartag.store.db import Database
from tests.support.models import make_model_dir, type_metrics

BUNDLED_VERSION = str(read_config(BUNDLED_DIR)["version"])
GOOD = {"Dealer": 0.95, "Stock": 0.9, "Placeholder": 0.99}


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    # torch: the ONNX export would be redone in every test's fresh data dir.
    return {"CARTAG_DATA_DIR": str(tmp_path / "data"), "CARTAG_ENGINE": "torch"}


def test_register_promote_rollback_history(env: dict[str, str], tmp_path: Path) -> None:
    runner = CliRunner()
    listed = runner.invoke(app, ["models", "list"], env={**env, "COLUMNS": "80"})
    assert listed.exit_code == 0, listed.output
    assert BUNDLED_VERSION in listed.stdout and "production" in listed.stdout
    assert "card, held-out" in listed.stdout  # no recorded metrics yet: the card's figures
    assert max(len(line) for line in listed.stdout.splitlines()) <= 80

    db = Database(f"sqlite:///{tmp_path / 'data' / 'cartag.db'}")
    registry.record_metrics(db, BUNDLED_VERSION, type_metrics(GOOD))
    metrics = tmp_path / "metrics.json"
    metrics.write_text(json.dumps(type_metrics({**GOOD, "Stock": 0.7})), encoding="utf-8")
    folder = make_model_dir(tmp_path / "m", "cli-2")
    args = ["models", "register", str(folder), "--metrics", str(metrics), "--dataset", "cars@1"]
    registered = runner.invoke(app, args, env=env)
    assert registered.exit_code == 0, registered.output
    assert registered.stdout.strip().splitlines()[-1] == "cartag models promote cli-2"

    gated = runner.invoke(app, ["models", "promote", "cli-2", "--by", "alice"], env=env)
    assert gated.exit_code == 2
    assert "promotion gate" in gated.output and "Stock" in gated.output
    assert "--force" in gated.output

    staged = runner.invoke(app, ["models", "promote", "cli-2", "--alias", "candidate"], env=env)
    assert staged.exit_code == 2 and "promotion gate" in staged.output
    staged = runner.invoke(
        app, ["models", "promote", "cli-2", "--alias", "candidate", "--force"], env=env
    )
    assert staged.exit_code == 0, staged.output
    # It said "servers switch within 5 s", which they do for production only.
    assert "candidate -> cli-2; servers keep serving production" in staged.output
    forced = runner.invoke(app, ["models", "promote", "cli-2", "--force"], env=env)
    assert forced.exit_code == 0, forced.output
    assert "production -> cli-2; servers switch within 5 s" in forced.output
    listed = runner.invoke(app, ["models", "list"], env={**env, "COLUMNS": "80"})
    assert "cli-2" in listed.stdout and "data: cars@1" in listed.stdout
    assert "cars@1:test" in listed.stdout and "type  acc" in listed.stdout
    assert max(len(line) for line in listed.stdout.splitlines()) <= 80

    rolled = runner.invoke(app, ["models", "rollback"], env=env)
    assert rolled.exit_code == 0 and BUNDLED_VERSION in rolled.output
    history = runner.invoke(app, ["models", "history"], env=env)
    assert history.exit_code == 0
    for word in ("initial", "promote", "rollback", "(serving)"):
        assert word in history.stdout
    again = runner.invoke(app, ["models", "rollback"], env=env)
    assert again.exit_code == 2 and "no earlier version" in again.output
    db.dispose()


def test_registering_the_same_folder_again_records_its_metrics_and_checks_its_dataset(
    env: dict[str, str], tmp_path: Path
) -> None:
    # A second `models register` of the same files printed "registered ..." and dropped its
    # --metrics and --dataset without a word; a --dataset that no store could hold was kept.
    runner = CliRunner()
    folder = make_model_dir(tmp_path / "m", "cli-3")
    first = runner.invoke(app, ["models", "register", str(folder), "--dataset", "cars@1"], env=env)
    assert first.exit_code == 0, first.output
    assert "note: dataset cars@1 is not in this store" in first.stderr
    assert "registered cli-3" in first.stderr

    metrics = tmp_path / "metrics.json"
    metrics.write_text(json.dumps(type_metrics(GOOD)), encoding="utf-8")
    again = runner.invoke(
        app, ["models", "register", str(folder), "--metrics", str(metrics)], env=env
    )
    assert again.exit_code == 0, again.output
    assert "cli-3 is registered already with these files" in again.stderr
    assert "recorded its metrics on cars@1:test" in again.stderr
    assert again.stdout.strip() == "cartag models promote cli-3"
    db = Database(f"sqlite:///{tmp_path / 'data' / 'cartag.db'}")
    with db.read() as session:
        row = model_versions.get_version(session, "cli-3")
        assert row.metrics == type_metrics(GOOD) and row.dataset_ref == "cars@1"
    db.dispose()

    other = runner.invoke(app, ["models", "register", str(folder), "--dataset", "cars@2"], env=env)
    assert other.exit_code == 2
    assert "cli-3 is registered already, trained on cars@1, not cars@2" in other.output
    for bad, words in (
        ("cars@", "--dataset: 'cars@' is not a dataset version"),
        ("cars", "NAME@N"),
    ):
        refused = runner.invoke(app, ["models", "register", str(folder), "--dataset", bad], env=env)
        assert refused.exit_code == 2 and words in refused.output, refused.output


def test_bad_input_exits_2(env: dict[str, str], tmp_path: Path) -> None:
    runner = CliRunner()
    missing = runner.invoke(app, ["models", "register", str(tmp_path / "nope")], env=env)
    assert missing.exit_code == 2 and "is not a folder" in missing.output
    unknown = runner.invoke(app, ["models", "promote", "nope"], env=env)
    assert unknown.exit_code == 2 and "no model version 'nope'" in unknown.output
    alias = runner.invoke(app, ["models", "history", "--alias", "staging"], env=env)
    assert alias.exit_code == 2 and "unknown alias" in alias.output
    broken = make_model_dir(tmp_path / "b", "broken-1", broken="truncated")
    refused = runner.invoke(app, ["models", "register", str(broken)], env=env)
    assert refused.exit_code == 2 and "refused" in refused.output


def test_advertisers_and_reclassify(env: dict[str, str]) -> None:
    runner = CliRunner()
    nothing = runner.invoke(app, ["advertisers", "set", "42"], env=env)
    assert nothing.exit_code == 2 and "--reclassify-on-promote" in nothing.output
    on = runner.invoke(app, ["advertisers", "set", "42", "--reclassify-on-promote"], env=env)
    assert on.exit_code == 0 and "on" in on.output
    off = runner.invoke(app, ["advertisers", "set", "7", "--no-reclassify-on-promote"], env=env)
    assert off.exit_code == 0
    listed = runner.invoke(app, ["advertisers", "list"], env=env)
    assert "42" in listed.stdout and "yes" in listed.stdout and "no" in listed.stdout

    refused = runner.invoke(app, ["models", "reclassify", "--advertiser", "7"], env=env)
    assert refused.exit_code == 2 and "has not opted in" in refused.output
    ran = runner.invoke(app, ["models", "reclassify"], env=env)
    assert ran.exit_code == 0, ran.output
    assert "for 42: 0 images" in ran.output


def test_key_metrics_say_which_heads_were_measured() -> None:
    from cartag.commands.models import key_metrics
    from cartag.store.tables import ModelVersionRow

    metrics = type_metrics(GOOD)
    plain = key_metrics(ModelVersionRow(version="v", metrics=metrics, card={}))
    assert "(int8)" not in plain and "(fp32)" not in plain
    for tasks in metrics.values():
        for report in tasks.values():
            report["heads"] = "int8"
    stamped = key_metrics(ModelVersionRow(version="v", metrics=metrics, card={}))
    assert stamped.splitlines()[1].endswith("(int8)")
