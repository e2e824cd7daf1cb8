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
        # Checked before minutes of training, not found after it (or by a traceback).
        (["--variant", "bogus"], "unknown backbone 'bogus'"),
        (["--placeholders", "-1"], "--placeholders must be 0 or more"),
        (["--threads", "-1"], "--threads must be 0"),
        (["--l2", "-1"], "--l2 must be more than 0"),
    ],
)
def test_build_bundled_refuses_bad_options(tmp_path: Path, extra: list[str], message: str) -> None:
    code, text = _run(
        ["build-bundled", "--data", str(tmp_path), "--out", str(tmp_path / "m")] + extra
    )
    assert code == 2
    assert "error:" in text and message in text


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--data", "{tmp}"], "has no labels.csv"),
        (["--data", "{data}", "--epochs", "0"], "--epochs must be at least 1"),
        (["--data", "{data}", "--color-weight", "-1"], "--color-weight must be between"),
        (["--data", "{data}", "--color-weight", "11"], "--color-weight must be between"),
        (["--data", "{data}", "--restage-stock", "1.5"], "--restage-stock must be between"),
    ],
)
def test_finetune_refuses_bad_options(tmp_path: Path, args: list[str], message: str) -> None:
    data = tmp_path / "data"
    data.mkdir()
    (data / "labels.csv").write_text("path,color,weak_type,white_border_fraction\n")
    argv = [a.format(tmp=tmp_path, data=data) for a in args] + ["--out", str(tmp_path / "w.npz")]
    code, text = _run(["finetune", *argv])
    assert code == 2
    assert "error:" in text and message in text
    assert not (tmp_path / "w.npz").exists()


def test_build_bundled_checks_its_data_and_output_first(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    code, text = _run(["build-bundled", "--data", str(tmp_path / "none"), "--out", "m"])
    assert code == 2 and "--data" in text and "is not a folder" in text
    out = tmp_path / "file" / "m"  # under a regular file: can never be written
    code, text = _run(["build-bundled", "--data", str(tmp_path), "--out", str(out)])
    assert code == 2 and "--out" in text and "cannot be written" in text
    assert "Traceback" not in text


def test_a_failed_build_leaves_no_empty_output_folder(tmp_path: Path) -> None:
    # The folder is made before training (to find an unwritable --out at once); a build
    # that then fails must not leave it, or the folders above it it made, behind.
    data = tmp_path / "data"
    data.mkdir()
    (data / "labels.csv").write_text("path,color,weak_type,white_border_fraction\n")
    out = tmp_path / "new" / "deeper" / "m"
    code, text = _run(["build-bundled", "--data", str(data), "--out", str(out)])
    assert code == 2 and "lists no photos" in text and "Traceback" not in text
    assert not (tmp_path / "new").exists()
    # A folder that existed before stays, with what was in it.
    kept = tmp_path / "kept"
    kept.mkdir()
    code, _ = _run(["build-bundled", "--data", str(data), "--out", str(kept / "m")])
    assert code == 2 and kept.is_dir() and not (kept / "m").exists()
