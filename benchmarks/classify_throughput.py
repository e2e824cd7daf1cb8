"""Throughput of the classify API on real photos, cold and warm, beside the raw backbone.

Serves N real JPEGs from ../shared/data/vcr-train on a local HTTP server, runs
``cartag serve``'s app under uvicorn on loopback, classifies the inventory twice
through ``POST /v1/classify`` (requests of up to 1,000 images), and prints:

- first-run images/s (download + decode + model + store),
- second-run images/s (conditional requests answered 304, cache lookups),
- image bytes downloaded on the second run (should be 0),
- raw backbone images/s on pre-decoded, pre-processed tensors, in the same run.

Usage::

    .venv/bin/python -m benchmarks.classify_throughput [--images 1000]
"""

from __future__ import annotations

import argparse
import ipaddress
import socket
import tempfile
import threading
import time
from pathlib import Path

import httpx
import uvicorn
from PIL import Image

from cartag.api.app import create_app
from cartag.models.backbone import Backbone
from cartag.settings import Settings
from cartag.store import apikeys
from cartag.store.db import Database, upgrade
from tests.support.factories import NOW
from tests.support.http_server import ImageServer
from tests.support.images import real_photos

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "vcr-train"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _raw_backbone_rate(paths: list[Path], batch_size: int, repeats: int = 3) -> float:
    backbone = Backbone.load()
    images = [Image.open(p).convert("RGB") for p in paths[: batch_size * 8]]
    batches = [
        backbone.preprocess(images[i : i + batch_size]) for i in range(0, len(images), batch_size)
    ]
    backbone.embed(batches[0])  # warm-up
    best = 0.0
    for _ in range(repeats):
        start = time.perf_counter()
        for batch in batches:
            backbone.embed(batch)
        best = max(best, len(images) / (time.perf_counter() - start))
    return best


def _classify(client: httpx.Client, urls: list[str], headers: dict[str, str]) -> float:
    start = time.perf_counter()
    for i in range(0, len(urls), 1000):
        body = {"advertiser_id": "bench", "images": [{"url": u} for u in urls[i : i + 1000]]}
        response = client.post("/v1/classify", json=body, headers=headers)
        response.raise_for_status()
    return len(urls) / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=1000)
    parser.add_argument("--data", type=Path, default=SHARED)
    args = parser.parse_args()

    paths = real_photos(args.data, args.images)
    with tempfile.TemporaryDirectory() as tmp, ImageServer() as images:
        urls = []
        for i, path in enumerate(paths):
            images.add_file(f"/img/{i}.jpg", path.read_bytes())
            urls.append(images.url(f"/img/{i}.jpg"))
        settings = Settings(
            data_dir=Path(tmp),
            allowed_networks=[ipaddress.ip_network("127.0.0.0/8")],
        )
        db = Database(settings.resolved_database_url)
        upgrade(db)
        with db.write() as session:
            _, key = apikeys.create_key(session, name="bench", roles=["classifier"], now=NOW)
        headers = {"Authorization": f"Bearer {key}"}

        port = _free_port()
        server = uvicorn.Server(
            uvicorn.Config(create_app(settings, db=db), port=port, log_level="warning")
        )
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        while not server.started:
            time.sleep(0.05)
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=600) as client:
            first = _classify(client, urls, headers)
            images.reset_counters()
            second = _classify(client, urls, headers)
            second_bytes = images.bytes_sent
        server.should_exit = True
        thread.join()
        raw = _raw_backbone_rate(paths, settings.inference_batch_size)
        db.dispose()

    print(f"images:                          {len(urls)}")
    print(f"first run (cold) images/s:       {first:8.1f}")
    print(f"second run (cached) images/s:    {second:8.1f}")
    print(f"image bytes downloaded, 2nd run: {second_bytes}")
    print(f"raw backbone images/s:           {raw:8.1f}  (batch {settings.inference_batch_size})")
    print(f"first run / raw backbone:        {first / raw:8.2f}")


if __name__ == "__main__":
    main()
