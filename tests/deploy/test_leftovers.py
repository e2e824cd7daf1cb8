"""What interrupted registrations leave in the model store, and the version lock."""

from __future__ import annotations

import shutil
import threading
import time
from pathlib import Path

import pytest

from cartag.deploy import leftovers
from cartag.deploy.leftovers import STALE_AFTER_S, sweep, version_lock
from tests.support.registry import Scene, model_dir, register

LATER = STALE_AFTER_S + 60  # seconds from now at which what a test writes is stale


def _leftover(root: Path, name: str) -> Path:
    folder = root / name
    (folder / "sub").mkdir(parents=True)
    (folder / "config.json").write_text("{}")
    (folder / "sub" / "type_head.npz").write_bytes(b"half")
    return folder


def test_an_interrupted_registration_leaves_nothing_once_stale(
    scene: Scene, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A registration killed during its copy left .incoming-* for good, and every version
    # its .lock-* file.
    root = scene.settings.data_dir / "models"
    killed = _leftover(root, ".incoming-v7-0a1b2c3d")
    half_removed = _leftover(root, ".stale-v6-0a1b2c3d")
    (root / ".lock-v7").touch()
    register(scene, "v8")
    # Fresh: a registration may be writing them right now.
    assert killed.is_dir() and half_removed.is_dir() and (root / ".lock-v7").exists()

    monkeypatch.setattr(leftovers, "STALE_AFTER_S", -1.0)  # everything is old now
    register(scene, "v9")
    assert not killed.exists() and not half_removed.exists()
    # Only the lock of the registration that swept them, taken after.
    assert sorted(p.name for p in root.iterdir() if p.name.startswith(".")) == [".lock-v9"]
    assert sorted(p.name for p in root.iterdir() if not p.name.startswith(".")) == sorted(
        [scene.initial, "v8", "v9"]
    )


def test_a_leftover_whose_version_is_being_registered_is_kept(tmp_path: Path) -> None:
    old = _leftover(tmp_path, ".incoming-v7-0a1b2c3d")
    with version_lock(tmp_path, "v7"):  # a registration of v7 runs (on this host)
        assert sweep(tmp_path, now=time.time() + LATER) == []
        assert old.is_dir() and (tmp_path / ".lock-v7").exists()
    assert sweep(tmp_path, now=time.time() + LATER) == [".incoming-v7-0a1b2c3d", ".lock-v7"]


def test_a_leftover_written_to_recently_is_kept_whatever_its_timestamps_say(
    tmp_path: Path,
) -> None:
    folder = _leftover(tmp_path, ".incoming-v7-0a1b2c3d")
    # A copy sets each file's mtime to its source's, long ago; the ctime still says now.
    shutil.copystat(Path(shutil.__file__), folder / "sub" / "type_head.npz")
    assert sweep(tmp_path) == []
    assert sweep(tmp_path, now=time.time() + LATER) == [".incoming-v7-0a1b2c3d"]
    assert not folder.exists()


def test_only_what_registrations_leave_is_swept(tmp_path: Path) -> None:
    for name in ("v7", ".incoming-v7", ".incoming-v7-notahex!", ".cache"):
        _leftover(tmp_path, name)
    assert sweep(tmp_path, now=time.time() + LATER) == []
    assert sweep(tmp_path / "absent") == []


def test_a_lock_file_removed_under_a_waiting_registration_still_excludes(
    tmp_path: Path,
) -> None:
    """Removing a lock file is safe: a waiter that locked the removed file locks again."""
    held = threading.Event()
    release = threading.Event()
    order: list[str] = []

    def register_(name: str) -> None:
        with version_lock(tmp_path, "v1"):
            order.append(f"{name} in")
            held.set()
            release.wait(10)
            order.append(f"{name} out")

    first = threading.Thread(target=register_, args=("first",))
    with version_lock(tmp_path, "v1"):
        first.start()  # opens the lock file and waits for it
        time.sleep(0.2)
        (tmp_path / ".lock-v1").unlink()  # as sweep does, holding the lock
    assert held.wait(10)
    second = threading.Thread(target=register_, args=("second",))
    second.start()
    time.sleep(0.3)
    assert order == ["first in"]  # the second waits for the first
    release.set()
    first.join(10)
    second.join(10)
    assert order == ["first in", "first out", "second in", "second out"]


def test_a_registration_interrupted_during_its_copy_removes_its_copy(
    scene: Scene, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = shutil.copytree

    def interrupted(src: Path, dst: Path, **kwargs: object) -> Path:
        real(src, dst, **kwargs)  # type: ignore[arg-type]
        raise KeyboardInterrupt

    source = model_dir(scene, "v5")
    monkeypatch.setattr(shutil, "copytree", interrupted)
    with pytest.raises(KeyboardInterrupt):
        register(scene, "v5", folder=source)
    root = scene.settings.data_dir / "models"
    assert not list(root.glob(".incoming-*"))
