"""Folders expanded into image files: regular files only."""

from __future__ import annotations

import os
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
