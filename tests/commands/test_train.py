"""``cartag train``: argument errors exit 2, a real sweep in its own process, the leaderboard."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml
from typer.testing import CliRunner

from cartag.cli import app
from cartag.clock import FakeClock
from cartag.models.classifier import Classifier
from cartag.settings import Settings
from cartag.store import datasets
from cartag.store.db import Database, upgrade
from tests.support.factories import NOW
from tests.support.sweep_data import (
    Example,
    cache_embeddings,
    embed_examples,
    examples,
    make_frozen_dataset,
)

SWEEP = {
    "n_trials": 4,
    "validation_fraction": 0.3,
    "mlp_epochs": 5,
    "search_space": {
        "head_type": ["linear", "mlp"],
        "augmentation": ["none", "noise"],
        "backbone": "production",
    },
}


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    return {
        "CARTAG_DATA_DIR": str(tmp_path / "data"),
        "CARTAG_ENGINE": "torch",
        "CARTAG_DATABASE_URL": "",
    }


@pytest.fixture
def sweep_file(tmp_path: Path) -> Path:
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump(SWEEP), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def tiny() -> list[Example]:
    return examples(seed=1)


@pytest.fixture(scope="module")
def vectors(classifier: Classifier, tiny: list[Example]) -> dict[str, np.ndarray]:
    return embed_examples(classifier, tiny)


def _store(env: dict[str, str]) -> tuple[Database, Settings]:
    settings = Settings(data_dir=Path(env["CARTAG_DATA_DIR"]), engine="torch")
    db = Database(settings.resolved_database_url)
    upgrade(db)
    return db, settings


def _frozen(
    env: dict[str, str],
    items: list[Example],
    vectors: dict[str, np.ndarray],
    classifier: Classifier,
) -> str:
    """A frozen dataset of ``items`` in ``env``'s store, its embeddings cached; its ref."""
    db, settings = _store(env)
    clock = FakeClock()
    try:
        ref = make_frozen_dataset(db, settings, clock, items)
        assert classifier.backbone_id is not None
        cache_embeddings(db, classifier.backbone_id, vectors, clock)
    finally:
        db.dispose()
    return ref


def test_missing_options_exit_2(env: dict[str, str], sweep_file: Path) -> None:
    result = CliRunner().invoke(app, ["train", "--sweep", str(sweep_file)], env=env)
    assert result.exit_code == 2
    assert "give --dataset NAME@N and --sweep FILE" in result.stderr


def test_bad_sweep_file_exits_2_naming_the_key(env: dict[str, str], tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("n_trials: 6\nsearch_space:\n  head_type: [linear, transformer]\n", "utf-8")
    result = CliRunner().invoke(app, ["train", "--dataset", "cars@1", "--sweep", str(bad)], env=env)
    assert result.exit_code == 2
    assert "search_space.head_type.1: 'transformer' is not one of linear, mlp" in result.stderr
    assert "Traceback" not in result.output


def test_unknown_or_draft_dataset_exits_2(
    env: dict[str, str], sweep_file: Path, tiny: list[Example]
) -> None:
    runner = CliRunner()
    result = runner.invoke(
        app, ["train", "--dataset", "cars@1", "--sweep", str(sweep_file)], env=env
    )
    assert result.exit_code == 2 and "no dataset" in result.stderr
    db, settings = _store(env)
    try:
        make_frozen_dataset(db, settings, FakeClock(), tiny[:8], freeze=False)
    finally:
        db.dispose()
    result = runner.invoke(
        app, ["train", "--dataset", "cars@1", "--sweep", str(sweep_file)], env=env
    )
    assert result.exit_code == 2
    assert "cars@1 is a draft" in result.stderr and "cartag dataset freeze cars@1" in result.stderr
    result = runner.invoke(
        app, ["train", "--dataset", "cars@1", "--sweep", str(sweep_file), "--trials", "3"], env=env
    )
    assert result.exit_code == 2 and "--trials must be between 4 and 8" in result.stderr

    # A bare name means the latest version, here a draft over a frozen one: that one is
    # named too (the message said only to freeze the draft).
    db, settings = _store(env)
    try:
        make_frozen_dataset(db, settings, FakeClock(), tiny[8:16], freeze=False)
        with db.write() as session:
            datasets.freeze(session, "cars@1", NOW)
    finally:
        db.dispose()
    result = runner.invoke(app, ["train", "--dataset", "cars", "--sweep", str(sweep_file)], env=env)
    assert result.exit_code == 2 and "cars@2 is a draft" in result.stderr
    assert "or train on its latest frozen version (--dataset cars@1)" in result.stderr


@pytest.mark.slow
def test_sweep_runs_in_its_own_niced_process_then_leaderboard(
    env: dict[str, str],
    sweep_file: Path,
    tiny: list[Example],
    vectors: dict[str, np.ndarray],
    classifier: Classifier,
) -> None:
    ref = _frozen(env, tiny, vectors, classifier)
    cartag = Path(sys.executable).with_name("cartag")
    child_env = {
        **os.environ,
        **env,
        "CARTAG_TRAINING_NICE": "10",
        "CARTAG_TRAINING_CPU_SHARE": "0.5",
        "COLUMNS": "250",
    }
    run = subprocess.run(
        [str(cartag), "train", "--dataset", ref, "--sweep", str(sweep_file)],
        env=child_env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    expected_nice = min(19, os.nice(0) + 10)
    assert f"at nice {expected_nice}" in run.stderr
    assert "4 new trial(s), 4 completed" in run.stderr
    # The default precision is int8, the engine here torch: int8 heads are made (for
    # servers on onnx) and each trial says whether they shipped, and that this one
    # would not serve them.
    said = re.findall(
        r"trial \d: (int8 heads within 0\.005 of fp32, registered at fp32 here|no int8 heads)",
        run.stderr,
    )
    assert len(said) == 4, run.stderr[-3000:]
    assert "production" in run.stdout and "trial 3" in run.stdout
    report = Path(run.stdout.split("report: ")[1].split()[0])
    assert report.parent == Path(env["CARTAG_DATA_DIR"]) / "reports"
    assert "<svg" in report.read_text(encoding="utf-8")
    assert "candidate: sweep-" in run.stdout

    # Same command again: nothing left to train.
    again = subprocess.run(
        [str(cartag), "train", "--dataset", ref, "--sweep", str(sweep_file)],
        env=child_env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert again.returncode == 0, again.stderr[-3000:]
    assert "0 new trial(s), 4 completed" in again.stderr

    report.unlink()
    board = CliRunner().invoke(
        app, ["train", "leaderboard", "--dataset", "cars"], env={**env, "COLUMNS": "250"}
    )
    assert board.exit_code == 0, board.output
    assert "trial 0" in board.stdout and report.is_file()


def test_ctrl_c_during_a_sweep_says_how_to_resume(
    env: dict[str, str],
    tmp_path: Path,
    tiny: list[Example],
    vectors: dict[str, np.ndarray],
    classifier: Classifier,
) -> None:
    ref = _frozen(env, tiny, vectors, classifier)
    slow = {**SWEEP, "mlp_epochs": 500, "search_space": {"head_type": "mlp"}}
    sweep = tmp_path / "slow.yaml"
    sweep.write_text(yaml.safe_dump(slow), encoding="utf-8")
    child = subprocess.Popen(
        [
            str(Path(sys.executable).with_name("cartag")),
            "train",
            "--dataset",
            ref,
            "--sweep",
            str(sweep),
        ],
        env={**os.environ, **env, "CARTAG_PRECISION": "fp32", "COLUMNS": "250"},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        # A shell's background job ignores SIGINT; a terminal's Ctrl-C does not.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),  # noqa: PLW1509
    )
    try:
        assert child.stdout is not None
        seen = ""
        deadline = time.monotonic() + 120
        # The first trial has started (its 500 epochs take seconds): interrupt it.
        while "training on" not in seen and time.monotonic() < deadline:
            seen += child.stdout.readline()
        time.sleep(2)
        child.send_signal(signal.SIGINT)
        output, _ = child.communicate(timeout=60)
    finally:
        child.kill()
    output = seen + output
    assert child.returncode == 130, output
    assert "interrupted: the trial that was running is marked failed" in output
    assert "Run the same command again to resume the sweep" in output
    assert "Traceback" not in output
