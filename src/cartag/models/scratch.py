"""Scratch folders of the ONNX tools, and the ones a killed process left behind.

Exporting, calibrating and quantizing the backbone work in temporary folders (tens of
MB: ONNX Runtime's augmented model alone is ~56 MB for lite0). A process killed outright
(SIGKILL, out of memory) cannot remove its folder, and the next run would not either:
each new scratch folder first removes this user's own folders of those kinds that have
not changed for :data:`STALE_S` (no export, calibration or quantization takes an hour).
"""

from __future__ import annotations

import logging
import os
import shutil
import stat
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Final

log = logging.getLogger(__name__)

PREFIXES: Final[tuple[str, ...]] = (
    "cartag-onnx-",
    "cartag-calibrate-",
    "cartag-quantize-",
    "cartag-int8-",
)
STALE_S: Final[float] = 6 * 3600.0


@contextmanager
def scratch_dir(prefix: str) -> Iterator[Path]:
    """A temporary folder named ``<prefix>…``, removed afterwards; stale ones go first.

    Args:
        prefix: One of :data:`PREFIXES`.
    """
    remove_stale()
    with tempfile.TemporaryDirectory(prefix=prefix) as tmp:
        yield Path(tmp)


def remove_stale(
    root: Path | None = None, *, now: float | None = None, older_than_s: float = STALE_S
) -> list[Path]:
    """Remove this user's scratch folders (:data:`PREFIXES`) unchanged for ``older_than_s``.

    Args:
        root: Where they are (default: the system's temporary folder).
        now: The time to age them against (default: now).
        older_than_s: How long unchanged makes a folder stale.

    Returns:
        The folders removed. Anything unreadable, another user's, a link or not a
        folder is left alone.
    """
    root = root if root is not None else Path(tempfile.gettempdir())
    now = time.time() if now is None else now
    try:
        entries = list(root.iterdir())
    except OSError:
        return []
    removed = []
    for entry in entries:
        if not entry.name.startswith(PREFIXES):
            continue
        try:
            info = entry.lstat()
            if (
                not stat.S_ISDIR(info.st_mode)
                or info.st_uid != os.getuid()
                or now - info.st_mtime < older_than_s
            ):
                continue
            shutil.rmtree(entry)
        except OSError:
            continue
        log.info("removed %s, left by a process that was killed", entry)
        removed.append(entry)
    return removed
