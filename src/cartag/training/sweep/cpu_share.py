"""Keep training off serving's CPUs: a lower priority and a bounded thread count.

``cartag train`` is a process of its own; :func:`apply_cpu_share` is the first thing
it does. It raises the process's nice value by ``CARTAG_TRAINING_NICE`` (so the
scheduler prefers a server on the same cores) and caps every thread pool it will use
at ``CARTAG_TRAINING_CPU_SHARE`` x cores: OpenMP/BLAS through their environment
variables (read when those libraries start their pools), torch's intra- and
inter-op pools, and ONNX Runtime's (the backbone is loaded with that many threads).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import Final

from cartag.settings import Settings

_THREAD_VARIABLES: Final[tuple[str, ...]] = (
    "OMP_NUM_THREADS",
    "MKL_NUM_THREADS",
    "OPENBLAS_NUM_THREADS",
    "NUMEXPR_NUM_THREADS",
    "VECLIB_MAXIMUM_THREADS",
)


@dataclass(frozen=True)
class CpuShare:
    """What :func:`apply_cpu_share` set.

    Attributes:
        cores: CPUs this process may run on.
        threads: Threads each pool may use.
        nice: The process's nice value afterwards.
    """

    cores: int
    threads: int
    nice: int


def available_cores() -> int:
    """CPUs this process may run on (its affinity mask, else the machine's count)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def share_threads(share: float, cores: int) -> int:
    """``floor(share * cores)``, at least 1 (0.5 of 2 cores -> 1 thread)."""
    return max(1, math.floor(share * cores + 1e-9))


def apply_cpu_share(settings: Settings, *, cores: int | None = None) -> CpuShare:
    """Lower this process's priority and cap its threads (call before any heavy work).

    Args:
        settings: ``training_nice`` and ``training_cpu_share``.
        cores: CPUs to share (default: :func:`available_cores`).

    Returns:
        The applied limits.
    """
    cores = cores or available_cores()
    threads = share_threads(settings.training_cpu_share, cores)
    for name in _THREAD_VARIABLES:
        os.environ[name] = str(threads)
    nice = os.nice(settings.training_nice) if settings.training_nice else os.nice(0)

    import torch

    torch.set_num_threads(threads)
    try:
        torch.set_num_interop_threads(threads)
    except RuntimeError:
        pass  # only settable before the first parallel work; the intra-op cap is what counts
    return CpuShare(cores=cores, threads=threads, nice=nice)
