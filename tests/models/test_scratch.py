"""Scratch folders: made and removed, and a killed process's left behind removed later."""

from __future__ import annotations

import os
import time
from pathlib import Path

from cartag.models.scratch import STALE_S, remove_stale, scratch_dir


def _aged(path: Path, seconds: float) -> Path:
    past = time.time() - seconds
    os.utime(path, (past, past))
    return path


def test_stale_folders_of_ours_go_and_nothing_else(tmp_path: Path) -> None:
    stale = tmp_path / "cartag-calibrate-abc"
    (stale / "inner").mkdir(parents=True)
    (stale / "inner" / "augmented.onnx").write_bytes(b"x" * 100)
    _aged(stale, STALE_S + 60)
    fresh = tmp_path / "cartag-quantize-new"
    fresh.mkdir()
    _aged(fresh, 60)
    other = tmp_path / "someone-elses"
    other.mkdir()
    _aged(other, STALE_S * 2)
    a_file = tmp_path / "cartag-onnx-file"
    a_file.write_bytes(b"not a folder")
    _aged(a_file, STALE_S * 2)
    link = tmp_path / "cartag-int8-link"
    link.symlink_to(other)

    assert remove_stale(tmp_path) == [stale]
    assert not stale.exists()
    assert fresh.is_dir() and other.is_dir() and a_file.is_file() and link.is_symlink()


def test_a_scratch_folder_is_removed_after_use() -> None:
    with scratch_dir("cartag-onnx-") as folder:
        assert folder.is_dir() and folder.name.startswith("cartag-onnx-")
        (folder / "backbone.onnx").write_bytes(b"model")
    assert not folder.exists()


def test_an_unreadable_root_removes_nothing(tmp_path: Path) -> None:
    assert remove_stale(tmp_path / "missing") == []
