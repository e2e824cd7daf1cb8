"""Process memory settings of long-running cartag processes (server, worker).

glibc gives every thread that allocates its own malloc arena (up to 8 x cores), and
freed memory in an arena is rarely returned to the system. cartag's threads (ONNX Runtime,
decoding, ``asyncio.to_thread``) each grow one, so the peak RSS of a server classifying a
1,000-image inventory was ~25 MB higher with the default than with 2 arenas, for the same
throughput (``benchmarks/RESULTS.md``).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import sys

log = logging.getLogger(__name__)

# mallopt parameter number of M_ARENA_MAX in glibc's <malloc.h>.
_M_ARENA_MAX = -8


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
