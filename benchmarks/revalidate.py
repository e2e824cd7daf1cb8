"""CPU per conditional request: the Fetcher revalidating cached images, lean path vs httpx.

Starts an :class:`~tests.support.http_server.ImageServer` in a child process (so that
its CPU is not the client's) serving ``--images`` small files with ETags, then has one
:class:`~cartag.net.fetch.Fetcher` revalidate all of them (``fetch_many`` of
conditional requests, every answer a 304) ``--rounds`` times per path, the paths taking
turns so that the machine's load hits both alike. It prints, per path, the client's CPU
per request (process time: Python, and the kernel's share of the socket calls) and the
requests/s, best round of each, and the connections the server accepted during the
path's rounds (after a warm-up that opens them: 0 when all were kept alive; a path's idle
connections expire after 5 s, so a slow round of the other path can cost a reconnect).

With ``--delay-ms`` every 304 comes that late (a server across a network): then the
per-host concurrency (``--per-host``, CARTAG_REVALIDATE_PER_HOST_CONCURRENCY) bounds
requests/s at about concurrency / delay.

Paths: ``lean``, the Fetcher's default (:class:`~cartag.net.revalidate.Revalidator`
over its own keep-alive connections), and ``httpx``, the full client (a Fetcher given
an httpx transport sends its conditional requests through it, as before the lean path).

Usage::

    .venv/bin/python -m benchmarks.revalidate [--images 1000] [--rounds 5]
        [--per-host 32] [--delay-ms 0]
"""

from __future__ import annotations

import argparse
import asyncio
import subprocess
import sys
import time
from collections.abc import Callable
from ipaddress import ip_network
from pathlib import Path

import httpx

from cartag.net.fetch import Fetcher
from cartag.net.outcomes import FetchRequest, NotModified
from cartag.net.transport import SniPoolTransport
from cartag.settings import Settings

ROOT = Path(__file__).resolve().parents[1]
# The child: serve the files (each 304 after --delay-ms, as a distant server would),
# print the port, report the connections accepted when stdin says so.
_SERVER = """
import sys, time
from tests.support.http_server import ImageServer
delay = float(sys.argv[2]) / 1000
def later(handler):
    time.sleep(delay)
    handler.respond(304, None, {"ETag": '"v"'})
with ImageServer() as server:
    for i in range(int(sys.argv[1])):
        if delay:
            server.add_handler(f"/img/{i}.jpg", later)
        else:
            server.add_file(f"/img/{i}.jpg", b"x" * 1000, etag=f'"v{i}"')
    print(server.port, flush=True)
    for line in sys.stdin:
        print(server.connections, flush=True)
        server.reset_counters()
"""


def _fetcher(path: str, settings: Settings) -> Fetcher:
    if path == "lean":
        return Fetcher(settings)
    n = settings.download_concurrency
    limits = httpx.Limits(max_connections=n, max_keepalive_connections=n)
    return Fetcher(settings, transport=SniPoolTransport(limits=limits))


async def _round(fetcher: Fetcher, requests: list[FetchRequest]) -> tuple[float, float]:
    """(CPU seconds, wall seconds) of revalidating ``requests`` once."""
    cpu, wall = time.process_time(), time.perf_counter()
    outcomes = await fetcher.fetch_many(requests)
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    if not all(isinstance(outcome, NotModified) for outcome in outcomes):
        raise SystemExit(f"not all answers were 304: {outcomes[:3]}")
    return cpu, wall


async def _measure(
    paths: list[str],
    settings: Settings,
    requests: list[FetchRequest],
    rounds: int,
    connections: Callable[[], int],
) -> dict[str, tuple[float, float, int]]:
    """Best (CPU s, wall s) of each path, and the connections the server accepted in its rounds."""
    fetchers = {path: _fetcher(path, settings) for path in paths}
    best = {path: (float("inf"), float("inf"), 0) for path in paths}
    try:
        for fetcher in fetchers.values():
            await fetcher.fetch_many(requests[:100])  # connections open, code warm
        connections()
        for r in range(rounds):
            order = paths[r % 2 :] + paths[: r % 2]
            for path in order:
                cpu, wall = await _round(fetchers[path], requests)
                opened = best[path][2] + connections()
                best[path] = min(best[path][0], cpu), min(best[path][1], wall), opened
    finally:
        for fetcher in fetchers.values():
            await fetcher.aclose()
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--per-host", type=int, default=None, help="revalidations per host")
    parser.add_argument(
        "--delay-ms", type=float, default=0.0, help="the server answers each 304 this late"
    )
    args = parser.parse_args()

    server = subprocess.Popen(
        [sys.executable, "-c", _SERVER, str(args.images), str(args.delay_ms)],
        cwd=ROOT,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert server.stdin is not None and server.stdout is not None
    stdin, stdout = server.stdin, server.stdout

    def connections() -> int:
        """Connections the server accepted since the last call."""
        stdin.write("\n")
        stdin.flush()
        return int(stdout.readline())

    try:
        port = int(server.stdout.readline())
        requests = [
            FetchRequest(f"http://127.0.0.1:{port}/img/{i}.jpg", etag=f'"v{i}"')
            for i in range(args.images)
        ]
        options = {"allowed_networks": [ip_network("127.0.0.0/8")]}
        if args.per_host is not None:
            options["revalidate_per_host_concurrency"] = args.per_host
        settings = Settings(**options)
        best = asyncio.run(
            _measure(["lean", "httpx"], settings, requests, args.rounds, connections)
        )
    finally:
        server.stdin.close()
        server.wait(10)

    n = args.images
    per_host = settings.revalidate_per_host_concurrency
    print(f"{n} conditional requests (all 304) per round, best of {args.rounds} rounds per path,")
    print(f"{per_host} at once to the one server, each answered {args.delay_ms:g} ms late")
    print()
    print("| path | client CPU us/request | requests/s | connections opened after warm-up |")
    print("|---|---|---|---|")
    for path, (cpu, wall, opened) in best.items():
        print(f"| {path} | {1e6 * cpu / n:.0f} | {n / wall:.0f} | {opened} |")
    lean, full = best["lean"][0], best["httpx"][0]
    print(f"\nlean / httpx CPU: {lean / full:.2f}")


if __name__ == "__main__":
    main()
