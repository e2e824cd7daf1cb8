"""BLAS threads of long-running cartag processes (server, worker).

numpy's OpenBLAS starts one thread per core and splits any matrix product above a
small size (m x n x k over about 260k) across them; its threads then spin while they
wait for work. A server already keeps every core busy with its own threads (decoding,
the model's runs, the event loop), so a split product only adds waiting: on 2 cores a
(4, 1280) x (1280, 256) product took 11 ms of CPU with 2 BLAS threads and 0.2 ms with
one, and the color features' (16k, 3) x (3, 3) twice as long (``benchmarks/RESULTS.md``,
"Performance, second round"). :func:`limit_blas_threads` caps the pools at startup.
"""

from __future__ import annotations

import logging

from threadpoolctl import threadpool_limits

log = logging.getLogger(__name__)


def limit_blas_threads(threads: int) -> bool:
    """Cap the BLAS libraries loaded in this process (numpy's OpenBLAS) at ``threads``.

    Args:
        threads: Threads per BLAS call; 0 leaves the libraries' defaults.

    Returns:
        Whether a cap was applied (False with ``threads == 0``).
    """
    if threads <= 0:
        return False
    # Called, not used as a context manager: the cap holds for the process's life.
    threadpool_limits(limits=threads, user_api="blas")
    log.debug("BLAS limited to %d thread(s) per call", threads)
    return True
