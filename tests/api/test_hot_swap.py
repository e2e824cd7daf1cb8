"""Promotion hot-swaps the model of a running server under load, dropping no request.

A real uvicorn server (in a thread, SQLite file) serves classify requests from
several concurrent clients — each request one fresh real photo and one cached
one — while another "process" (here: the registry functions the CLI calls)
promotes a second real model version. The server's poller picks the promotion up
and swaps the model; then a damaged version is promoted and must be refused while
the swapped-in model keeps serving.
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
import uvicorn

from cartag.api.app import create_app
from cartag.clock import SystemClock
from cartag.deploy import promote as promotion
from cartag.deploy import registry
from cartag.errors import ModelUnloadableError
from cartag.models.classifier import BUNDLED_DIR, Classifier, read_config
from cartag.settings import Settings
from cartag.store import model_versions as repo
from cartag.store.db import Database
from tests.api.conftest import make_headers
from tests.support.http_server import ImageServer
from tests.support.images import real_photos
from tests.support.models import make_model_dir

pytestmark = pytest.mark.slow

BUNDLED_VERSION = str(read_config(BUNDLED_DIR)["version"])
WORKERS = 6


@contextmanager
def running_server(settings: Settings, db: Database, classifier: Classifier) -> Iterator[str]:
    """A real uvicorn server on an ephemeral port, in a thread; yields its base URL."""
    app = create_app(settings, db=db, classifier=classifier)
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started and thread.is_alive() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert server.started, "uvicorn did not start"
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(30)
        sock.close()


@dataclass
class Sent:
    """One classify request of the load loop."""

    sent_at: float
    latency_s: float
    fresh_version: str | None


@dataclass
class Load:
    sent: list[Sent] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)


async def load_loop(
    base_url: str,
    headers: dict[str, str],
    fresh: list[str],
    cached: list[str],
    stop: threading.Event,
    load: Load,
) -> None:
    """WORKERS clients, each posting [fresh image, cached image] until told to stop."""
    queue = list(reversed(fresh))

    async def worker(n: int) -> None:
        async with httpx.AsyncClient(base_url=base_url, timeout=120) as http:
            i = 0
            while not stop.is_set() and queue:
                url = queue.pop()
                body = {
                    "advertiser_id": f"adv-{n}",
                    "images": [{"url": url}, {"url": cached[(n + i) % len(cached)]}],
                }
                i += 1
                start = time.monotonic()
                try:
                    response = await http.post("/v1/classify", json=body, headers=headers)
                except httpx.HTTPError as exc:
                    load.failures.append(f"{url}: {exc!r}")
                    continue
                elapsed = time.monotonic() - start
                if response.status_code != 200:
                    load.failures.append(f"{url}: HTTP {response.status_code} {response.text}")
                    continue
                results = response.json()["results"]
                if any(r["status"] == "skipped" for r in results):
                    load.failures.append(f"{url}: {results}")
                    continue
                load.sent.append(Sent(start, elapsed, results[0]["model_version"]))

    await asyncio.gather(*(worker(n) for n in range(WORKERS)))


def _wait_for(predicate: object, timeout_s: float, what: str) -> float:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return time.monotonic()
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def test_promotion_under_load_drops_no_request(
    settings: Settings,
    sqlite_db: Database,
    classifier: Classifier,
    shared_data: Path,
    tmp_path: Path,
) -> None:
    settings = settings.model_copy(update={"model_poll_s": 0.2})
    photos = real_photos(shared_data, 420, seed=3)
    clock = SystemClock()
    with ImageServer() as images, running_server(settings, sqlite_db, classifier) as base_url:
        for i, photo in enumerate(photos):
            images.add_file(f"/p{i}.jpg", photo.read_bytes())
        urls = [images.url(f"/p{i}.jpg") for i in range(len(photos))]
        cached, fresh = urls[:20], urls[20:]
        headers = make_headers(sqlite_db, "classifier")
        with httpx.Client(base_url=base_url, headers=headers, timeout=120) as http:
            warm = http.post(
                "/v1/classify",
                json={"advertiser_id": "warm", "images": [{"url": u} for u in cached]},
            )
            assert warm.status_code == 200
            assert http.get("/v1/models").json()["serving"] == BUNDLED_VERSION

            load = Load()
            stop = threading.Event()
            loop_thread = threading.Thread(
                target=lambda: asyncio.run(load_loop(base_url, headers, fresh, cached, stop, load))
            )
            loop_thread.start()
            try:
                time.sleep(2)
                # Another process promotes: register a second real model and point production at it.
                folder = make_model_dir(tmp_path / "m2", "hot-2", temperature_scale=1.5)
                registry.register_model(
                    sqlite_db, settings, folder, created_by="t", clock=clock, reuse=classifier
                )
                promoted_at = time.monotonic()
                promotion.promote(
                    sqlite_db, settings, "hot-2", by="t", clock=clock, reuse=classifier
                )
                swapped_at = _wait_for(
                    lambda: http.get("/v1/models").json()["serving"] == "hot-2", 30, "the swap"
                )
                time.sleep(2)

                # A version whose files broke after registration: promote refuses it.
                damaged = make_model_dir(tmp_path / "m3", "hot-3")
                registry.register_model(
                    sqlite_db, settings, damaged, created_by="t", clock=clock, reuse=classifier
                )
                npz = settings.data_dir / "models" / "hot-3" / "type_head.npz"
                npz.write_bytes(npz.read_bytes()[:64])
                with pytest.raises(ModelUnloadableError):
                    promotion.promote(
                        sqlite_db, settings, "hot-3", by="t", clock=clock, reuse=classifier
                    )
                # Should the alias name it anyway (files broken between a promotion and
                # the servers' poll): the server refuses it and hot-2 keeps serving.
                with sqlite_db.write() as session:
                    repo.point_alias(
                        session, "production", "hot-3", by="t", reason="promote", now=clock.now()
                    )

                def refused() -> bool:
                    with sqlite_db.read() as session:
                        return repo.get_version(session, "hot-3").status == "refused"

                _wait_for(refused, 30, "the refusal")
                time.sleep(1)
                assert http.get("/v1/models").json()["serving"] == "hot-2"
            finally:
                stop.set()
                loop_thread.join(120)

    assert load.failures == []
    before = [s for s in load.sent if s.sent_at + s.latency_s < promoted_at]
    after = [s for s in load.sent if s.sent_at > swapped_at]
    assert before and after, (len(before), len(after))
    assert {s.fresh_version for s in before} == {BUNDLED_VERSION}
    assert {s.fresh_version for s in after} == {"hot-2"}
    during = [
        s for s in load.sent if s.sent_at <= swapped_at and s.sent_at + s.latency_s >= promoted_at
    ]
    worst = max(s.latency_s for s in load.sent)
    worst_during = max((s.latency_s for s in during), default=0.0)
    typical = sorted(s.latency_s for s in before)[len(before) // 2]
    print(
        f"\nhot-swap: {len(load.sent)} requests, 0 failed; swap seen "
        f"{swapped_at - promoted_at:.2f} s after the promotion; median latency before "
        f"{typical * 1000:.0f} ms, worst overall {worst * 1000:.0f} ms; "
        f"{len(during)} requests in flight across the swap, worst {worst_during * 1000:.0f} ms"
    )
