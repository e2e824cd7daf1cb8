"""The BLAS thread cap that `cartag serve` and `cartag worker` apply at start."""

from __future__ import annotations

import subprocess
import sys

from cartag.blas import limit_blas_threads


def test_zero_leaves_the_default() -> None:
    assert limit_blas_threads(0) is False


def test_cap_holds_for_the_process_in_a_fresh_process() -> None:
    # A child process: the cap lasts for the life of the process that sets it.
    code = (
        "import numpy\n"
        "from threadpoolctl import threadpool_info\n"
        "from cartag.blas import limit_blas_threads\n"
        "print(limit_blas_threads(1))\n"
        "print(sorted({p['num_threads'] for p in threadpool_info() if p['user_api'] == 'blas'}))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split("\n")[:2] == ["True", "[1]"]


def test_serve_and_worker_settings_default_to_one_thread() -> None:
    from cartag.settings import Settings

    assert Settings().blas_threads == 1
