"""The malloc-arena cap that `cartag serve` and `cartag worker` apply at start."""

from __future__ import annotations

import ctypes.util
import subprocess
import sys

import pytest

from cartag.memory import limit_malloc_arenas


def test_zero_leaves_the_default() -> None:
    assert limit_malloc_arenas(0) is False


@pytest.mark.skipif(
    not sys.platform.startswith("linux") or ctypes.util.find_library("c") is None,
    reason="glibc's mallopt is Linux-only",
)
def test_cap_is_applied_in_a_fresh_process() -> None:
    # A child process: the cap lasts for the life of the process that sets it.
    code = "from cartag.memory import limit_malloc_arenas; print(limit_malloc_arenas(2))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "True"


def test_startup_objects_are_frozen_in_a_fresh_process() -> None:
    # A child process: freezing lasts for the life of the process, as in cartag serve.
    code = (
        "import gc\n"
        "from cartag.memory import freeze_startup_objects\n"
        "frozen = freeze_startup_objects()\n"
        "print(frozen > 1000, frozen == gc.get_freeze_count(), len(gc.get_objects(2)) < 100)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["True", "True", "True"]
