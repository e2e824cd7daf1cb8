"""The per-version registration lock, and what interrupted registrations leave behind.

A registration copies a model folder to ``<models root>/.incoming-<version>-<hex>`` and
renames it into place (a folder it replaces is first renamed aside to ``.stale-…`` and
removed), all under an exclusive lock on ``<models root>/.lock-<version>``
(:func:`version_lock`). A registration killed part-way left its ``.incoming-*`` copy (or a
``.stale-*`` folder half removed) for good, and every version ever registered left its
lock file. :func:`sweep` removes those no process is using: a folder only when nothing in
it changed for :data:`STALE_AFTER_S` and its version's lock is free (no registration of
that version runs), a lock file only when nobody holds it and nobody took it for as long.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import re
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Final

log = logging.getLogger(__name__)

LOCK_PREFIX: Final[str] = ".lock-"
INCOMING_PREFIX: Final[str] = ".incoming-"
STALE_PREFIX: Final[str] = ".stale-"

# How long a leftover must have been left alone before it is removed. A copy in progress
# changes (its ctime, which no copy of timestamps can set back) with every file written;
# an hour is far longer than any pause between two files of a model folder.
STALE_AFTER_S: Final[float] = 3600.0

# ".incoming-<version>-<8 hex>" / ".stale-<version>-<8 hex>", as registry._copy_in names them.
_LEFTOVER = re.compile(r"^\.(?:incoming|stale)-(?P<version>.+)-[0-9a-f]{8}$")


@contextlib.contextmanager
def version_lock(root: Path, version: str) -> Iterator[None]:
    """Hold an exclusive lock on ``<root>/.lock-<version>`` (waits for the holder).

    :func:`sweep` may remove the file while nobody holds it. A process that opened it
    before the removal and locked it after would hold a lock on a file no longer there
    while another locks the new one, so the lock counts only once the file locked is the
    one at the path; otherwise it is taken again.
    """
    root.mkdir(parents=True, exist_ok=True)
    path = root / f"{LOCK_PREFIX}{version}"
    while True:
        with open(path, "a+b") as handle:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX)  # released when the file is closed
            if not _is_at(handle.fileno(), path):
                continue
            with contextlib.suppress(OSError):
                os.utime(handle.fileno())  # its age for sweep: when it was last taken
            yield
            return


def _is_at(fd: int, path: Path) -> bool:
    """Whether the open file ``fd`` is the file at ``path`` now."""
    try:
        there = os.stat(path)
    except FileNotFoundError:
        return False
    mine = os.fstat(fd)
    return (there.st_dev, there.st_ino) == (mine.st_dev, mine.st_ino)


def sweep(root: Path, *, now: float | None = None) -> list[str]:
    """Remove the leftovers of interrupted registrations no process is using.

    Args:
        root: The models root.
        now: The file system's time (``time.time()``): leftovers unchanged since
            ``now - STALE_AFTER_S`` are stale.

    Returns:
        The names removed (``.incoming-*`` and ``.stale-*`` folders, ``.lock-*`` files).
    """
    if not root.is_dir():
        return []
    since = (time.time() if now is None else now) - STALE_AFTER_S
    removed: list[str] = []
    for entry in sorted(root.iterdir()):
        found = _LEFTOVER.match(entry.name)
        if found is None or _changed_since(entry, since):
            continue
        with _lock_free(root, found["version"]) as free:
            # Checked again under the lock: a registration may have written it meanwhile.
            if free and not _changed_since(entry, since):
                shutil.rmtree(entry, ignore_errors=True)
                removed.append(entry.name)
    for entry in sorted(root.glob(f"{LOCK_PREFIX}*")):
        if not _changed_since(entry, since) and _remove_lock(entry):
            removed.append(entry.name)
    return removed


def _changed_since(entry: Path, since: float) -> bool:
    """Whether ``entry`` or anything in it changed (ctime) at or after ``since``.

    The ctime, not the mtime: a copy sets each file's mtime to its source's, but every
    write, rename or change of timestamps sets the ctime to now. An entry that cannot be
    read counts as changed (it is left alone).
    """
    try:
        if entry.lstat().st_ctime >= since:
            return True
        if not entry.is_dir() or entry.is_symlink():
            return False
        for folder, dirs, files in os.walk(entry, onerror=_raise):
            for name in (*dirs, *files):
                if os.lstat(os.path.join(folder, name)).st_ctime >= since:
                    return True
    except OSError:
        return True
    return False


def _raise(exc: OSError) -> None:
    raise exc


@contextlib.contextmanager
def _lock_free(root: Path, version: str) -> Iterator[bool]:
    """Yield whether no process holds ``version``'s lock, holding it meanwhile if it exists.

    No lock file: no registration of the version runs (a registration holds its lock file
    from before its copy starts, and a held lock file is never removed).
    """
    try:
        fd = os.open(root / f"{LOCK_PREFIX}{version}", os.O_RDWR)
    except FileNotFoundError:
        yield True
        return
    except OSError:
        yield False
        return
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        yield True
    finally:
        os.close(fd)


def _remove_lock(path: Path) -> bool:
    """Remove a lock file if nobody holds it (removed while locked: see :func:`version_lock`)."""
    try:
        fd = os.open(path, os.O_RDWR)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        if not _is_at(fd, path):
            return False
        path.unlink()
        return True
    except OSError:  # BlockingIOError included: it is held
        return False
    finally:
        os.close(fd)
