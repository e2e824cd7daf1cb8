"""Folders expanded into image files: regular files only."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from cartag.errors import InputError
from cartag.imaging.files import find_images
from tests.support.images import jpeg_bytes


def test_folders_are_searched_and_only_regular_image_files_kept(tmp_path: Path) -> None:
    (tmp_path / "b.JPG").write_bytes(jpeg_bytes())
    (tmp_path / "notes.txt").write_text("x")
    album = tmp_path / "album.jpg"  # a folder with an image suffix: searched, not read
    album.mkdir()
    (album / "a.png").write_bytes(b"png")
    os.mkfifo(tmp_path / "pipe.jpg")  # reading it would block forever
    assert find_images([tmp_path]) == [album / "a.png", tmp_path / "b.JPG"]


def test_a_path_that_is_not_a_file_or_folder_is_named(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "pipe.jpg")
    with pytest.raises(InputError, match="not a regular file or a folder"):
        find_images([tmp_path / "pipe.jpg"])
    with pytest.raises(InputError, match="does not exist"):
        find_images([tmp_path / "missing.jpg"])
    with pytest.raises(InputError, match="no image files"):
        find_images([tmp_path])


def test_a_folder_that_cannot_be_read_is_named(tmp_path: Path) -> None:
    # Its images were left out without a word: "1 of 2", or "no image files under" it.
    (tmp_path / "ok.jpg").write_bytes(b"x")
    locked = tmp_path / "locked"
    locked.mkdir()
    (locked / "car.jpg").write_bytes(b"x")
    locked.chmod(0)
    script = (
        "import sys; from pathlib import Path\n"
        "from cartag.errors import InputError\n"
        "from cartag.imaging.files import find_images\n"
        "try:\n    find_images([Path(sys.argv[1])])\n"
        "except InputError as exc:\n    print(exc.message)\n"
    )
    command = [sys.executable, "-c", script, str(tmp_path)]
    if os.geteuid() == 0:
        # Root reads any folder: drop the capabilities that let it.
        setpriv = shutil.which("setpriv")
        assert setpriv is not None, "util-linux's setpriv is needed to test this as root"
        command = [setpriv, "--bounding-set", "-dac_override,-dac_read_search", *command]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=60, check=True)
    finally:
        locked.chmod(0o755)
    assert f"cannot read the folder {locked}" in done.stdout, done.stdout + done.stderr
    assert "Permission denied" in done.stdout
