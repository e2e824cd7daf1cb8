"""A/B of two server configurations: two ``cartag serve`` processes, cold classifies in turn.

A change to the serving path is worth a few per cent at most by now, less than the
spread between two runs of ``benchmarks.classify_throughput`` on a shared machine
(a 1600x1200 run gave 161-181 img/s over three rounds of the same code). This
script measures the difference instead of two absolute rates: it starts two servers
side by side, A and B, each with its own data dir and its own ``CARTAG_*`` settings,
and gives them the same cold 300-photo classify in alternating order, round after
round (A B, B A, A B, ...), so that whatever else the machine does hits both alike.
Each round's URLs are new (the bytes differ by a trailer after the JPEG end marker),
so every image is downloaded, decoded and classified.

Compare code rather than settings by pointing each side at its own checkout:
``--python-b /path/to/other/.venv/bin/python`` (``-m cartag.cli``), or settings
alone with ``--a`` and ``--b`` (``NAME=VALUE,NAME=VALUE``). Only one server works at
a time; the idle one holds its memory and nothing else.

It prints each side's best and median images/s and median server CPU ms/image over
the rounds, and B / A.

Usage::

    .venv/bin/python -m benchmarks.serve_ab --size 1600x1200 --rounds 6 \\
        --a CARTAG_INFERENCE_WORKERS=2 --b CARTAG_INFERENCE_WORKERS=3
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from benchmarks.classify_throughput import SHARED, _wait_ready, encoded_photos
from benchmarks.peers import JPEG_QUALITY, classify_rate, cpu_seconds, free_port, parse_size
from tests.support.http_server import ImageServer
from tests.support.images import real_photos


def parse_env(text: str) -> dict[str, str]:
    """``"A=1,B=x"`` -> ``{"A": "1", "B": "x"}``; only ``CARTAG_*`` names."""
    env: dict[str, str] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        name, sep, value = item.partition("=")
        if not sep or not name.startswith("CARTAG_"):
            raise argparse.ArgumentTypeError(f"expected CARTAG_NAME=VALUE, got {item!r}")
        env[name] = value
    return env


@dataclass
class Side:
    """One server of the comparison and what it measured."""

    name: str
    python: str
    settings: dict[str, str]
    rates: list[float] = field(default_factory=list)
    cpu_ms: list[float] = field(default_factory=list)


Started = tuple[subprocess.Popen[bytes], httpx.Client, dict[str, str]]


def _start(side: Side, stack: ExitStack) -> Started:
    """Start ``side``'s server in a data dir of its own; its process, client and key header."""
    data_dir = stack.enter_context(tempfile.TemporaryDirectory())
    env = {
        **os.environ,
        "CARTAG_DATA_DIR": data_dir,
        "CARTAG_ALLOWED_NETWORKS": "127.0.0.0/8",
        **side.settings,
    }
    cli = [side.python, "-m", "cartag.cli"]
    made = subprocess.run(
        [*cli, "keys", "create", "--role", "classifier", "--name", "ab"],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    if made.returncode != 0:
        raise SystemExit(f"{side.name}: cartag keys create failed:\n{made.stdout}{made.stderr}")
    headers = {"Authorization": f"Bearer {made.stdout.strip().splitlines()[-1]}"}
    port = free_port()
    log = Path(data_dir) / "serve.log"
    with log.open("wb") as log_file:
        server = subprocess.Popen(
            [*cli, "serve", "--port", str(port), "--log-level", "warning"],
            env=env,
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )
    stack.callback(server.wait)
    stack.callback(server.terminate)
    client = stack.enter_context(httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=900))
    _wait_ready(client, server, log)
    return server, client, headers


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--images", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=6, help="rounds; each side once per round")
    parser.add_argument("--size", type=parse_size, default=parse_size("1024x768"))
    parser.add_argument("--quality", type=int, default=JPEG_QUALITY)
    parser.add_argument("--data", type=Path, default=SHARED)
    parser.add_argument("--a", type=parse_env, default={}, help="A's CARTAG_* settings")
    parser.add_argument("--b", type=parse_env, default={}, help="B's CARTAG_* settings")
    parser.add_argument("--python-b", default=sys.executable, help="B's Python (another checkout)")
    args = parser.parse_args()
    if args.rounds < 1 or args.images < 1:
        parser.error("--rounds and --images must be at least 1")

    photos = encoded_photos(real_photos(args.data, args.images), args.size, args.quality)
    sides = [Side("A", sys.executable, args.a), Side("B", args.python_b, args.b)]
    with ImageServer() as images, ExitStack() as stack:
        servers = [_start(side, stack) for side in sides]
        for r in range(args.rounds):
            for k in (0, 1) if r % 2 == 0 else (1, 0):
                server, client, headers = servers[k]
                urls = []
                for i, photo in enumerate(photos):
                    path = f"/img/{r}/{k}/{i}.jpg"
                    images.add_file(path, photo + f"cartag-ab-{r}".encode())
                    urls.append(images.url(path))
                cpu0 = cpu_seconds(server.pid)
                sides[k].rates.append(classify_rate(client, urls, headers))
                sides[k].cpu_ms.append((cpu_seconds(server.pid) - cpu0) * 1000 / len(urls))
    for side in sides:
        print(
            f"{side.name} {side.settings or '(defaults)'} {side.python}: best "
            f"{max(side.rates):.1f}, median {statistics.median(side.rates):.1f} img/s; "
            f"server CPU {statistics.median(side.cpu_ms):.2f} ms/image (median); "
            f"rounds {', '.join(f'{rate:.0f}' for rate in side.rates)}"
        )
    a, b = sides
    print(
        f"B / A: best {max(b.rates) / max(a.rates):.3f}, "
        f"median {statistics.median(b.rates) / statistics.median(a.rates):.3f}"
    )


if __name__ == "__main__":
    main()
