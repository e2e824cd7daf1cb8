"""Image files on disk: folders expanded into the image files they hold.

Used by ``cartag predict`` and the evaluation (:mod:`cartag.models.files`) and by
dataset building from folders (:mod:`cartag.training.datasets.dataset_build`).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from cartag.errors import InputError

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".webp", ".gif", ".bmp", ".tif", ".tiff"})


def is_image_file(path: Path) -> bool:
    """A regular file (or a link to one) with an image suffix."""
    return path.suffix.lower() in IMAGE_SUFFIXES and path.is_file()


def _images_under(folder: Path) -> list[Path]:
    """The image files under ``folder``, recursively (symlinked folders not followed).

    Raises:
        InputError: A folder under it cannot be read: its images would be left out
            without a word (a dataset import missing a class).
    """
    unreadable: list[OSError] = []
    found = [
        Path(top, name)
        for top, _, files in os.walk(folder, onerror=unreadable.append)
        for name in files
        if is_image_file(Path(top, name))
    ]
    if unreadable:
        first = unreadable[0]
        more = f" (and {len(unreadable) - 1} more)" if len(unreadable) > 1 else ""
        raise InputError(
            f"cannot read the folder {first.filename}{more}: {first.strerror}; fix its "
            "permissions, or pass only the folders that can be read",
            field="path",
        )
    return found


def find_images(paths: Sequence[Path]) -> list[Path]:
    """Expand files and folders (recursively) into a sorted list of image files.

    Only regular files count: a folder named ``album.jpg`` is searched, not read, and a
    named pipe or device would block its reader forever.

    Raises:
        InputError: A path does not exist or is not a regular file or folder, or nothing
            was found.
    """
    found: list[Path] = []
    for path in paths:
        if path.is_dir():
            found.extend(sorted(_images_under(path)))
        elif path.is_file():
            found.append(path)
        elif path.exists():
            raise InputError(f"{path} is not a regular file or a folder", field="path")
        else:
            raise InputError(f"{path} does not exist", field="path")
    if not found:
        raise InputError(
            f"no image files ({', '.join(sorted(IMAGE_SUFFIXES))}) under "
            + ", ".join(str(p) for p in paths),
            field="path",
        )
    return found
