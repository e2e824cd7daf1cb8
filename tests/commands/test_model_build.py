"""``cartag models build-bundled`` and ``cartag models finetune``: options and their errors."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from cartag.cli import app

ENV = {"COLUMNS": "200"}


def _run(args: list[str]) -> tuple[int, str]:
    result = CliRunner().invoke(app, ["models", *args], env=ENV)
    return result.exit_code, result.output


def test_help_lists_every_option() -> None:
    code, text = _run(["build-bundled", "--help"])
    assert code == 0
    for option in (
        "--data",
        "--out",
        "--sources",
        "--recolor-min-real",
        "--cache-dir",
        "--variant",
        "--placeholders",
        "--seed",
        "--recolored-per-color",
        "--l2",
        "--threads",
        "--backbone-weights",
    ):
        assert option in text
    code, text = _run(["finetune", "--help"])
    assert code == 0
    for option in ("--data", "--out", "--variant", "--epochs", "--color-weight"):
        assert option in text
    assert "--restage-stock" in text and "--threads" in text


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--recolored-per-color", "-1"], "must be 0 or more"),
        (["--recolor-min-real", "0"], "must be 1 or more"),
        (["--sources", "vcr,nope"], "nope"),
        (["--backbone-weights", "missing.npz"], "does not exist"),
    ],
)
def test_build_bundled_refuses_bad_options(tmp_path: Path, extra: list[str], message: str) -> None:
    code, text = _run(
        ["build-bundled", "--data", str(tmp_path), "--out", str(tmp_path / "m")] + extra
    )
    assert code == 2
    assert "error:" in text and message in text


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ([], "has no labels.csv"),
        (["--epochs", "0"], "at least 1"),
        (["--color-weight", "11"], "between 0 and 10"),
        (["--restage-stock", "2"], "between 0 and 1"),
    ],
)
def test_finetune_refuses_bad_options(tmp_path: Path, extra: list[str], message: str) -> None:
    if extra:
        (tmp_path / "labels.csv").write_text("path,color,weak_type\n")
    code, text = _run(
        ["finetune", "--data", str(tmp_path), "--out", str(tmp_path / "w.npz")] + extra
    )
    assert code == 2
    assert "error:" in text and message in text
