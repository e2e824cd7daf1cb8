"""Sample a running server with py-spy and say where its CPU went.

``benchmarks/classify_throughput.py --profile DIR`` wraps cartag's first and second
runs in :func:`sampled`, which records the server process with ``py-spy record``
(collapsed stacks, idle threads left out) while the block runs, and :func:`summary`
attributes the busy samples to the deepest ``cartag`` frame of each stack: the
lines that issue 18's "CPU outside the model" is made of.

py-spy must be installed beside cartag (``.venv/bin/pip install py-spy``); without
it the runs are measured as usual and the profile is skipped with a note.
"""

from __future__ import annotations

import collections
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

# Leaf frames that are threads waiting, not working: py-spy's idle filter lets some
# of them through (a thread blocked in a lock or a queue looks busy to it).
_WAITING = (
    "Condition.wait",
    "Semaphore.acquire",
    "EpollSelector.select",
    "Event.wait",
    "_worker (concurrent/futures/thread.py:81)",
)


def py_spy() -> str | None:
    """The py-spy executable beside this Python, or on PATH; None if absent."""
    beside = Path(sys.executable).with_name("py-spy")
    return str(beside) if beside.is_file() else shutil.which("py-spy")


@contextmanager
def sampled(pid: int, out: Path, rate: int = 100) -> Iterator[None]:
    """Record ``pid`` with py-spy while the block runs.

    Args:
        pid: The process to sample.
        out: Collapsed stacks are written here (``stack;frames count`` lines).
        rate: Samples per second.
    """
    exe = py_spy()
    if exe is None:
        print(f"py-spy is not installed: no profile for {out.name}", file=sys.stderr)
        yield
        return
    out.parent.mkdir(parents=True, exist_ok=True)
    # --nonblocking: py-spy otherwise stops the process for every sample, and each stop
    # wakes the threads blocked in C waits (the batcher's queue.get) and shows them busy:
    # an idle MicroBatcher took ~4-7 % of the "busy" samples of a re-run, using no CPU.
    command = [exe, "record", "--pid", str(pid), "--rate", str(rate), "--nonblocking"]
    command += ["-f", "raw", "-o", str(out)]
    command.append("--subprocesses")  # the processes of `cartag serve --workers N` too
    recorder = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(0.5)  # py-spy attaches before the run starts
    try:
        yield
    finally:
        recorder.send_signal(signal.SIGINT)  # py-spy writes its file when interrupted
        try:
            recorder.wait(30)
        except subprocess.TimeoutExpired:
            recorder.kill()


def summary(paths: Path | list[Path], top: int = 25) -> list[tuple[float, str]]:
    """Busy samples of collapsed-stack files by the deepest cartag frame.

    Args:
        paths: A file written by :func:`sampled`, or several (their samples add up).
        top: Lines to keep.

    Returns:
        (share of busy samples, frame) pairs, largest first; [] if no file is there.
    """
    files = [p for p in ([paths] if isinstance(paths, Path) else paths) if p.is_file()]
    counts: collections.Counter[str] = collections.Counter()
    busy = 0
    lines = [line for p in files for line in p.read_text(encoding="utf-8").splitlines()]
    for line in lines:
        stack, _, number = line.rpartition(" ")
        frames = stack.split(";")
        if not number.isdigit() or frames[-1].startswith(_WAITING):
            continue
        ours = [frame for frame in frames if "cartag/" in frame]
        counts[(ours[-1] if ours else frames[-1]).split(" (")[0]] += int(number)
        busy += int(number)
    return [(n / busy, frame) for frame, n in counts.most_common(top)] if busy else []
