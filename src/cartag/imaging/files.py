"""Image files on disk: folders expanded into the image files they hold.

Used by ``cartag predict`` and the evaluation (:mod:`cartag.models.files`) and by
dataset building from folders (:mod:`cartag.training.datasets.dataset_build`).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from cartag.errors import InputError

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".webp", ".gif", ".bmp", ".tif", ".tiff"})


def find_images(paths: Sequence[Path]) -> list[Path]:
    """Expand files and folders (recursively) into a sorted list of image files.

    Raises:
        InputError: A path does not exist, or nothing was found.
    """
    found: list[Path] = []
    for path in paths:
        if path.is_dir():
            found.extend(sorted(p for p in path.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES))
        elif path.is_file():
            found.append(path)
        else:
            raise InputError(f"{path} does not exist", field="path")
    if not found:
        raise InputError(
            f"no image files ({', '.join(sorted(IMAGE_SUFFIXES))}) under "
            + ", ".join(str(p) for p in paths),
            field="path",
        )
    return found
