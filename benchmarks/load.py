"""Bounded load test of the classify API on loopback: cached lookups and fresh classifications.

Starts ``cartag serve`` as its own process (SQLite or a private PostgreSQL schema),
serves real photos from ../shared/data/vcr-train on a local image server, warms
``--warm`` of them into the cache, then runs three bounded phases with async clients:

1. **throughput**: ``--clients-throughput`` clients send cached 1,000-image requests
   for ``--seconds`` seconds -> cached results/s;
2. **latency**: one client sends cached 100-image requests for ``--latency-seconds``
   -> p50/p95/p99;
3. **mixed**: ``--clients`` clients (default 64), each request drawn at random: cached
   1,000-image, cached 100-image, or a fresh classification of ``--fresh-size`` new
   URLs (new bytes: the model runs) -> per kind: requests, results/s, p50/p95/p99,
   errors (any non-200, transport error, or a cached request answered otherwise).

By default a URL revalidated within the last hour is answered without a conditional
request (``CARTAG_REVALIDATE_AFTER_S=3600``, the cached path that scales);
``--revalidate-after 0`` measures the always-revalidate default instead (one 304
per image from the local image server). ``--redis-cache URL`` puts the Redis lookup
cache in front of the database. Other ``CARTAG_*`` variables reach the server.

Usage::

    .venv/bin/python -m benchmarks.load --db sqlite --seconds 15
    .venv/bin/python -m benchmarks.load --db postgresql --seconds 15 [--redis-cache redis://127.0.0.1:6379/12]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from benchmarks.classify_throughput import _cartag, _cpu_s, _free_port, _wait_ready
from tests.support.http_server import ImageServer
from tests.support.images import real_photos

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "vcr-train"
CARTAG = Path(sys.executable).with_name("cartag")
PG_URL = os.environ.get(
    "CARTAG_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)
TARGET_CACHED_PER_S = 5000
TARGET_P99_100_MS = 50.0


@dataclass
class Kind:
    """Latencies and outcomes of one kind of request."""

    name: str
    latencies_ms: list[float] = field(default_factory=list)
    results: int = 0
    cached: int = 0
    errors: int = 0
    error_samples: list[str] = field(default_factory=list)

    def error(self, what: str) -> None:
        self.errors += 1
        if len(self.error_samples) < 3:
            self.error_samples.append(what[:300])

    def summary(self, seconds: float) -> dict[str, Any]:
        lat = sorted(self.latencies_ms)

        def pct(p: float) -> float | None:
            if not lat:
                return None
            return round(lat[min(len(lat) - 1, int(p / 100 * len(lat)))], 1)

        return {
            "requests": len(lat),
            "errors": self.errors,
            "results_per_s": round(self.results / seconds, 1),
            "cached_results_per_s": round(self.cached / seconds, 1),
            "p50_ms": pct(50),
            "p95_ms": pct(95),
            "p99_ms": pct(99),
            "mean_ms": round(statistics.fmean(lat), 1) if lat else None,
            "error_samples": self.error_samples,
        }


class Load:
    """The request kinds, against one running server."""

    def __init__(
        self,
        client: httpx.AsyncClient,
        headers: dict[str, str],
        warm: list[str],
        images: ImageServer,
        photos: list[bytes],
        fresh_size: int,
    ) -> None:
        self.client = client
        self.headers = headers
        self.warm = warm
        self.images = images
        self.photos = photos
        self.fresh_size = fresh_size
        self._fresh = 0

    async def cached(self, kind: Kind, n: int, rng: random.Random) -> None:
        urls = rng.sample(self.warm, n) if n < len(self.warm) else self.warm
        await self._post(kind, urls, expect_cached=True)

    async def fresh(self, kind: Kind) -> None:
        urls = []
        for _ in range(self.fresh_size):
            self._fresh += 1
            i = self._fresh
            trailer = f"fresh-{i}".encode()  # new bytes after the JPEG end: a new image
            self.images.add_file(f"/fresh/{i}.jpg", self.photos[i % len(self.photos)] + trailer)
            urls.append(self.images.url(f"/fresh/{i}.jpg"))
        await self._post(kind, urls, expect_cached=False)

    async def _post(self, kind: Kind, urls: list[str], *, expect_cached: bool) -> None:
        body = {"advertiser_id": "load", "images": [{"url": u} for u in urls]}
        start = time.perf_counter()
        try:
            response = await self.client.post("/v1/classify", json=body, headers=self.headers)
        except httpx.HTTPError as exc:
            kind.error(f"{type(exc).__name__}: {exc}")
            return
        elapsed = (time.perf_counter() - start) * 1000
        if response.status_code != 200:
            kind.error(f"HTTP {response.status_code}: {response.text}")
            return
        counts = response.json()["counts"]
        kind.latencies_ms.append(elapsed)
        kind.results += sum(counts.values())
        kind.cached += counts.get("cached", 0)
        if expect_cached and counts.get("cached", 0) != len(urls):
            kind.error(f"expected {len(urls)} cached, got {counts}")
        if not expect_cached and counts.get("skipped", 0):
            kind.error(f"fresh images skipped: {counts}")


async def _run_for(seconds: float, clients: int, step: Any) -> float:
    """Run ``step(client_index)`` in a loop on ``clients`` tasks for ``seconds``; returns the
    wall time until the last in-flight request ended."""
    deadline = time.perf_counter() + seconds
    start = time.perf_counter()

    async def loop(i: int) -> None:
        while time.perf_counter() < deadline:
            await step(i)

    await asyncio.gather(*(loop(i) for i in range(clients)))
    return time.perf_counter() - start


async def _phases(load: Load, args: argparse.Namespace) -> dict[str, Any]:
    rng = random.Random(7)
    report: dict[str, Any] = {}

    big = Kind("cached_1000")
    wall = await _run_for(
        args.seconds, args.clients_throughput, lambda _i: load.cached(big, 1000, rng)
    )
    report["throughput"] = {"clients": args.clients_throughput} | big.summary(wall)

    small = Kind("cached_100")
    wall = await _run_for(args.latency_seconds, 1, lambda _i: load.cached(small, 100, rng))
    report["latency"] = {"clients": 1} | small.summary(wall)

    kinds = {name: Kind(name) for name in ("cached_1000", "cached_100", "fresh")}
    weights = {"cached_1000": args.mix[0], "cached_100": args.mix[1], "fresh": args.mix[2]}

    async def mixed(_i: int) -> None:
        name = rng.choices(list(weights), weights=list(weights.values()))[0]
        if name == "fresh":
            await load.fresh(kinds[name])
        else:
            await load.cached(kinds[name], 1000 if name == "cached_1000" else 100, rng)

    wall = await _run_for(args.seconds, args.clients, mixed)
    report["mixed"] = {"clients": args.clients, "seconds": round(wall, 1)} | {
        name: kind.summary(wall) for name, kind in kinds.items()
    }
    report["mixed"]["cached_results_per_s"] = round(sum(k.cached for k in kinds.values()) / wall, 1)
    report["mixed"]["errors"] = sum(k.errors for k in kinds.values())
    return report


@contextmanager
def _database(kind: str, tmp: Path) -> Iterator[str]:
    if kind == "sqlite":
        yield f"sqlite:///{tmp / 'cartag.db'}"
        return
    from sqlalchemy import create_engine, text

    schema = f"load_{uuid.uuid4().hex[:10]}"
    admin = create_engine(PG_URL)
    with admin.begin() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    try:
        joiner = "&" if "?" in PG_URL else "?"
        yield f"{PG_URL}{joiner}options=-csearch_path%3D{schema}"
    finally:
        with admin.begin() as conn:
            conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


def run(args: argparse.Namespace, db_kind: str) -> dict[str, Any]:
    paths = real_photos(args.data, args.warm)
    photos = [p.read_bytes() for p in paths]
    with (
        tempfile.TemporaryDirectory() as tmp_name,
        ImageServer() as images,
        _database(db_kind, Path(tmp_name)) as db_url,
    ):
        tmp = Path(tmp_name)
        warm = []
        for i, data in enumerate(photos):
            images.add_file(f"/warm/{i}.jpg", data)
            warm.append(images.url(f"/warm/{i}.jpg"))
        env = {
            **os.environ,
            "CARTAG_DATA_DIR": str(tmp),
            "CARTAG_DATABASE_URL": db_url,
            "CARTAG_ALLOWED_NETWORKS": "127.0.0.0/8",
            "CARTAG_REVALIDATE_AFTER_S": str(args.revalidate_after),
        }
        if args.redis_cache:
            env["CARTAG_REDIS_CACHE_URL"] = args.redis_cache
            env["CARTAG_REDIS_CACHE_PREFIX"] = f"load-{uuid.uuid4().hex[:8]}:"
        _cartag(env, "db", "upgrade")
        key = _cartag(env, "keys", "create", "--role", "classifier", "--name", "load")
        headers = {"Authorization": f"Bearer {key.strip().splitlines()[-1]}"}
        port = _free_port()
        log = tmp / "serve.log"
        with log.open("wb") as log_file:
            server = subprocess.Popen(
                [str(CARTAG), "serve", "--port", str(port), "--log-level", "warning"],
                env=env,
                stdout=log_file,
                stderr=subprocess.STDOUT,
            )
        try:
            base = f"http://127.0.0.1:{port}"
            with httpx.Client(base_url=base, timeout=600) as sync:
                _wait_ready(sync, server, log)
                start = time.perf_counter()
                for i in range(0, len(warm), 1000):
                    body = {
                        "advertiser_id": "load",
                        "images": [{"url": u} for u in warm[i : i + 1000]],
                    }
                    sync.post("/v1/classify", json=body, headers=headers).raise_for_status()
                warm_s = time.perf_counter() - start

            async def go() -> dict[str, Any]:
                limits = httpx.Limits(max_connections=args.clients + 8)
                async with httpx.AsyncClient(base_url=base, timeout=120, limits=limits) as client:
                    load = Load(client, headers, warm, images, photos, args.fresh_size)
                    return await _phases(load, args)

            cpu0, own0 = _cpu_s(server.pid), time.process_time()
            wall0 = time.perf_counter()
            report = asyncio.run(go())
            wall = time.perf_counter() - wall0
            report["cpu"] = {
                "server_cores": round((_cpu_s(server.pid) - cpu0) / wall, 2),
                "harness_cores": round((time.process_time() - own0) / wall, 2),
            }
            report["setup"] = {
                "database": db_kind,
                "warm_images": len(warm),
                "warm_s": round(warm_s, 1),
                "revalidate_after_s": args.revalidate_after,
                "redis_cache": bool(args.redis_cache),
                "cpus": os.cpu_count(),
                "load_average_1m": round(os.getloadavg()[0], 1),
            }
        finally:
            server.terminate()
            server.wait(30)
    return report


def _print(report: dict[str, Any]) -> None:
    setup = report["setup"]
    print(
        f"== {setup['database']}: {setup['warm_images']} warm images (warmed in "
        f"{setup['warm_s']} s), revalidate_after_s={setup['revalidate_after_s']}, "
        f"redis cache {'on' if setup['redis_cache'] else 'off'}, {setup['cpus']} CPUs, "
        f"load average {setup['load_average_1m']}"
    )
    t = report["throughput"]
    ok = "met" if t["cached_results_per_s"] >= TARGET_CACHED_PER_S else "missed"
    print(
        f"throughput  {t['clients']:>2} clients x cached 1000-image requests: "
        f"{t['cached_results_per_s']:8.0f} cached results/s (target >= {TARGET_CACHED_PER_S}: "
        f"{ok}); p50/p95/p99 {t['p50_ms']}/{t['p95_ms']}/{t['p99_ms']} ms, errors {t['errors']}"
    )
    lat = report["latency"]
    ok = "met" if lat["p99_ms"] is not None and lat["p99_ms"] < TARGET_P99_100_MS else "missed"
    print(
        f"latency      1 client  x cached 100-image requests:  p50/p95/p99 "
        f"{lat['p50_ms']}/{lat['p95_ms']}/{lat['p99_ms']} ms (p99 target < {TARGET_P99_100_MS}: "
        f"{ok}), {lat['requests']} requests, errors {lat['errors']}"
    )
    mixed = report["mixed"]
    print(
        f"mixed       {mixed['clients']:>2} clients, {mixed['seconds']} s: "
        f"{mixed['cached_results_per_s']:.0f} cached results/s, errors {mixed['errors']}"
    )
    for name in ("cached_1000", "cached_100", "fresh"):
        k = mixed[name]
        print(
            f"  {name:<12} {k['requests']:>5} requests, {k['results_per_s']:8.1f} results/s, "
            f"p50/p95/p99 {k['p50_ms']}/{k['p95_ms']}/{k['p99_ms']} ms, errors {k['errors']}"
            + (f"  e.g. {k['error_samples'][0]}" if k["error_samples"] else "")
        )
    cpu = report["cpu"]
    print(f"cpu: server {cpu['server_cores']} cores, harness {cpu['harness_cores']} cores")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", choices=["sqlite", "postgresql", "both"], default="both")
    parser.add_argument("--seconds", type=float, default=15, help="length of phases 1 and 3")
    parser.add_argument("--latency-seconds", type=float, default=10, help="length of phase 2")
    parser.add_argument("--clients", type=int, default=64, help="clients of the mixed phase")
    parser.add_argument("--clients-throughput", type=int, default=4)
    parser.add_argument("--warm", type=int, default=1000, help="images warmed into the cache")
    parser.add_argument("--fresh-size", type=int, default=4, help="new images per fresh request")
    parser.add_argument(
        "--mix",
        type=lambda s: [float(x) for x in s.split(",")],
        default=[1.0, 8.0, 1.0],
        help="weights of cached-1000, cached-100 and fresh requests in the mixed phase",
    )
    parser.add_argument("--revalidate-after", type=float, default=3600)
    parser.add_argument("--redis-cache", default=None, help="redis:// URL of the lookup cache")
    parser.add_argument("--data", type=Path, default=SHARED)
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = parser.parse_args()
    if args.warm < 1000:
        parser.error("--warm must be at least 1000 (the 1,000-image requests)")
    reports = []
    for db_kind in ("sqlite", "postgresql") if args.db == "both" else (args.db,):
        report = run(args, db_kind)
        _print(report)
        reports.append(report)
    if args.json:
        args.json.write_text(json.dumps(reports, indent=2) + "\n")


if __name__ == "__main__":
    main()
