"""Peer servers to time cartag against, and the process measurements every benchmark shares.

``../shared/bench/`` holds two stand-alone servers with cartag's ``POST /v1/classify``
contract (``{"images": [{"url": ...}]}`` in, ``{"results": [...]}`` out):

- ``naive``: ``naive_server.py``, one image at a time, urllib, full decode, eager torch
  at batch 1 (HTTP/1.0: one connection per request);
- ``competent``: ``competent_server.py``, parallel keep-alive downloads, JPEG draft
  decode, ONNX Runtime at batch 16; no cache, color, store or safety checks.

:class:`Peer` starts one as a subprocess of this interpreter on a free loopback port,
waits until it answers, classifies lists of URLs through it over one HTTP/1.1
keep-alive client (requests of up to 1,000 images, as ``classify_throughput`` sends
cartag), and reports images/s, the CPU seconds it spent per image (its process and
any children, from ``/proc``) and its peak RSS. It stops the peer on exit.

Usage (a smoke test; ``benchmarks.classify_throughput --peers`` times them beside cartag)::

    .venv/bin/python -m benchmarks.peers competent URL [URL ...]
"""

from __future__ import annotations

import io
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

import httpx
from PIL import Image, ImageOps

BENCH = Path(__file__).resolve().parents[2] / "shared" / "bench"
PEERS = {"naive": "naive_server.py", "competent": "competent_server.py"}
MAX_PER_REQUEST = 1000
# The vcr-train photos are 224x224: re-encoded at 1024x768 (centre crop to 4:3, Lanczos
# upscale) the 300 of ``real_photos(..., 300)`` average 72.0 kB at quality 82 (the issue's
# ~72 kB), 58 kB at 75, 77 kB at 85; at 1600x1200, 132.5 kB.
JPEG_QUALITY = 82


# --- /proc -------------------------------------------------------------------------


@dataclass(frozen=True)
class ProcStat:
    """The fields of ``/proc/<pid>/stat`` used here; times in clock ticks."""

    ppid: int
    utime: int
    stime: int
    cutime: int  # children already waited for
    cstime: int


def parse_stat(text: str) -> ProcStat:
    """Parse a ``/proc/<pid>/stat`` line (the command name may hold spaces and parens)."""
    fields = text.rsplit(")", 1)[1].split()
    # fields[0] is field 3 (state): ppid is field 4, utime..cstime fields 14-17.
    return ProcStat(
        ppid=int(fields[1]),
        utime=int(fields[11]),
        stime=int(fields[12]),
        cutime=int(fields[13]),
        cstime=int(fields[14]),
    )


def _stat(pid: int) -> ProcStat | None:
    try:
        return parse_stat(Path(f"/proc/{pid}/stat").read_text())
    except (OSError, IndexError, ValueError):  # gone meanwhile
        return None


def descendants(pid: int, parents: dict[int, int]) -> list[int]:
    """Every process below ``pid`` in a ``{pid: ppid}`` table, nearest first."""
    children: dict[int, list[int]] = {}
    for child, parent in parents.items():
        children.setdefault(parent, []).append(child)
    found: list[int] = []
    todo = list(children.get(pid, []))
    while todo:
        child = todo.pop(0)
        found.append(child)
        todo.extend(children.get(child, []))
    return found


def _parents() -> dict[int, int]:
    table: dict[int, int] = {}
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            stat = _stat(int(entry.name))
            if stat is not None:
                table[int(entry.name)] = stat.ppid
    return table


def cpu_seconds(pid: int, children: bool = True) -> float:
    """User + system CPU seconds used so far by ``pid``.

    With ``children``, add those of the children it already waited for and of
    every live descendant (a server that forks workers is counted whole).
    """
    stat = _stat(pid)
    if stat is None:
        raise RuntimeError(f"no process {pid}")
    ticks = stat.utime + stat.stime
    if children:
        ticks += stat.cutime + stat.cstime
        for child in descendants(pid, _parents()):
            child_stat = _stat(child)
            if child_stat is not None:
                ticks += child_stat.utime + child_stat.stime
    return ticks / os.sysconf("SC_CLK_TCK")


def memory_kb(pid: int, field: str) -> int:
    """A ``/proc/<pid>/status`` memory field (VmHWM: peak RSS, VmRSS: current), in kB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1])
    raise RuntimeError(f"no {field} in /proc/{pid}/status")


def tree_memory_kb(pid: int, field: str) -> int:
    """:func:`memory_kb` summed over ``pid`` and its live descendants (``serve --workers``).

    For VmHWM that is the sum of each process's own peak: an upper bound of the
    peak of the whole, as the processes need not peak at once.
    """
    total = memory_kb(pid, field)
    for child in descendants(pid, _parents()):
        try:
            total += memory_kb(child, field)
        except (OSError, RuntimeError):
            continue  # it ended meanwhile, or is a helper without that field
    return total


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


# --- images ------------------------------------------------------------------------


def parse_size(text: str) -> tuple[int, int]:
    """``"1024x768"`` -> ``(1024, 768)``."""
    width, sep, height = text.lower().partition("x")
    if not sep or not width.isdigit() or not height.isdigit() or not int(width) or not int(height):
        raise ValueError(f"size must be WIDTHxHEIGHT, e.g. 1024x768, not {text!r}")
    return int(width), int(height)


def resized_jpeg(data: bytes, size: tuple[int, int], quality: int = JPEG_QUALITY) -> bytes:
    """``data`` (any image) as a baseline JPEG of exactly ``size``.

    Crops the centre to the target aspect ratio (no stretching), resizes with Lanczos
    (up or down), and encodes at ``quality`` with 4:2:0 chroma, as photo sites do.
    """
    image = ImageOps.exif_transpose(Image.open(io.BytesIO(data))).convert("RGB")
    fitted = ImageOps.fit(image, size, Image.Resampling.LANCZOS)
    buffer = io.BytesIO()
    fitted.save(buffer, "JPEG", quality=quality, subsampling="4:2:0", optimize=True)
    return buffer.getvalue()


# --- classify over HTTP ------------------------------------------------------------


def classify_rate(
    client: httpx.Client,
    urls: Sequence[str],
    headers: dict[str, str] | None = None,
    clients: int = 1,
    check: Callable[[dict[str, Any]], None] | None = None,
) -> float:
    """Images/s of classifying ``urls`` in requests of up to 1,000, ``clients`` at a time.

    ``check`` sees each response's JSON (e.g. to count what was classified).
    """
    per_request = min(MAX_PER_REQUEST, -(-len(urls) // clients))
    chunks = [list(urls[i : i + per_request]) for i in range(0, len(urls), per_request)]

    def post(chunk: list[str]) -> None:
        body = {"advertiser_id": "bench", "images": [{"url": u} for u in chunk]}
        response = client.post("/v1/classify", json=body, headers=headers or {})
        response.raise_for_status()
        if check is not None:
            check(response.json())

    start = time.perf_counter()
    with ThreadPoolExecutor(max_workers=clients) as pool:
        list(pool.map(post, chunks))
    return len(urls) / (time.perf_counter() - start)


@dataclass
class PeerRun:
    """One classify run through a peer."""

    images: int
    images_per_s: float
    cpu_s: float
    classified: int

    @property
    def cpu_ms_per_image(self) -> float:
        return 1000 * self.cpu_s / self.images


class Peer:
    """A peer server from ``../shared/bench/`` in a subprocess (a context manager).

    Args:
        name: ``"naive"`` or ``"competent"``.
        python: The interpreter to run it with (cartag's, which has its deps).
        bench_dir: Where the peer files are.
        start_timeout_s: How long to wait for it to answer (the competent peer
            exports its ONNX model on its first start).
    """

    def __init__(
        self,
        name: str,
        python: str = sys.executable,
        bench_dir: Path = BENCH,
        start_timeout_s: float = 300,
    ) -> None:
        if name not in PEERS:
            raise ValueError(f"unknown peer {name!r}; known: {', '.join(PEERS)}")
        self.name = name
        self.file = bench_dir / PEERS[name]
        self.python = python
        self.start_timeout_s = start_timeout_s
        self.port = 0
        self.process: subprocess.Popen[bytes] | None = None
        self.client: httpx.Client | None = None
        self._log = tempfile.NamedTemporaryFile(prefix=f"peer-{name}-", suffix=".log")

    @property
    def pid(self) -> int:
        if self.process is None:
            raise RuntimeError(f"peer {self.name} is not running")
        return self.process.pid

    def start(self) -> Peer:
        """Start the peer and wait until it answers an empty classify request."""
        self.port = free_port()
        self.process = subprocess.Popen(
            [self.python, str(self.file), str(self.port)],
            stdout=self._log,
            stderr=subprocess.STDOUT,
            cwd=self.file.parent,
        )
        self.client = httpx.Client(base_url=f"http://127.0.0.1:{self.port}", timeout=900)
        deadline = time.monotonic() + self.start_timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"peer {self.name} exited:\n{self.log_tail()}")
            try:
                if self.client.post("/v1/classify", json={"images": []}).status_code == 200:
                    return self
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"peer {self.name} did not answer in {self.start_timeout_s} s")

    def classify(self, urls: Sequence[str], clients: int = 1) -> PeerRun:
        """Classify ``urls`` (requests of up to 1,000); images/s and CPU of the peer."""
        if self.client is None:
            raise RuntimeError(f"peer {self.name} is not running")
        classified = 0

        def count(body: dict[str, Any]) -> None:
            nonlocal classified
            classified += sum(r.get("status") == "classified" for r in body["results"])

        cpu0 = cpu_seconds(self.pid)
        rate = classify_rate(self.client, urls, clients=clients, check=count)
        return PeerRun(len(urls), rate, cpu_seconds(self.pid) - cpu0, classified)

    def peak_rss_kb(self) -> int:
        """Peak resident memory of the peer's main process (VmHWM)."""
        return memory_kb(self.pid, "VmHWM")

    def log_tail(self, chars: int = 4000) -> str:
        return Path(self._log.name).read_text(errors="replace")[-chars:]

    def stop(self) -> None:
        if self.client is not None:
            self.client.close()
            self.client = None
        if self.process is not None:
            self.process.terminate()
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(30)
            self.process = None
        self._log.close()

    def __enter__(self) -> Peer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()


def main() -> None:
    if len(sys.argv) < 3:
        raise SystemExit(__doc__)
    with Peer(sys.argv[1]) as peer:
        run = peer.classify(sys.argv[2:])
        print(
            f"{peer.name}: {run.classified}/{run.images} classified, "
            f"{run.images_per_s:.1f} images/s, {run.cpu_ms_per_image:.1f} CPU ms/image, "
            f"peak RSS {peer.peak_rss_kb() / 1024:.0f} MB"
        )


if __name__ == "__main__":
    main()
