"""Process memory settings of long-running cartag processes (server, worker).

:func:`freeze_startup_objects` keeps what startup built (the model, the app, the
libraries: ~100-300k objects) out of the garbage collector's full collections. Without
it a full collection walked them all every few hundred requests' worth of allocations:
~80 ms of CPU about every second re-run of a 1,000-image inventory, 40 us per image.

glibc gives every thread that allocates its own malloc arena (up to 8 x cores), and
freed memory in an arena is rarely returned to the system. cartag's threads (ONNX Runtime,
decoding, ``asyncio.to_thread``) each grow one, so the peak RSS of a server classifying a
1,000-image inventory was ~25 MB higher with the default than with 2 arenas, for the same
throughput (``benchmarks/RESULTS.md``).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
import logging
import sys

log = logging.getLogger(__name__)

# mallopt parameter number of M_ARENA_MAX in glibc's <malloc.h>.
_M_ARENA_MAX = -8


def freeze_startup_objects() -> int:
    """Collect once, then exempt every object alive now from later collections.

    Call it when a long-running process has finished starting (model loaded). Objects
    made later are collected as usual; a frozen object that becomes garbage is still
    freed when its last reference goes (only reference cycles among them are kept).

    Returns:
        How many objects were frozen.
    """
    gc.collect()
    gc.freeze()
    return gc.get_freeze_count()


def limit_malloc_arenas(arenas: int) -> bool:
    """Cap glibc's malloc arenas for the threads created from now on.

    Args:
        arenas: Most arenas; 0 leaves the C library's default.

    Returns:
        Whether the cap was applied (False on non-glibc systems or with ``arenas == 0``).
    """
    if arenas <= 0 or not sys.platform.startswith("linux"):
        return False
    name = ctypes.util.find_library("c")
    if name is None:
        return False
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # musl and others have no mallopt
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    applied = bool(mallopt(_M_ARENA_MAX, arenas))
    if not applied:
        log.warning("could not limit malloc arenas to %d", arenas)
    return applied
