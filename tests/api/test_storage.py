"""A full disk: 503 storage_unavailable instead of 500s, cached answers still served,
/healthz (liveness) and /readyz (readiness) say what is wrong.

The disk is "filled" by an injected SQLite error (tests.support.storage), never for real.
"""

from __future__ import annotations

import threading
import time

import pytest
from fastapi.testclient import TestClient

from cartag.clock import FakeClock
from cartag.store import health as health_module
from cartag.store.db import Database
from tests.api.conftest import AppFactory, make_headers
from tests.support.http_server import ImageServer
from tests.support.images import jpeg_bytes
from tests.support.storage import full_disk


def _classify(client: TestClient, headers: dict[str, str], urls: list[str]) -> TestClient:
    body = {"advertiser_id": "dealer-1", "images": [{"url": u} for u in urls]}
    return client.post("/v1/classify", json=body, headers=headers)  # type: ignore[return-value]


def test_a_full_disk_is_503_storage_unavailable_and_cached_answers_are_still_served(
    make_client: AppFactory, sqlite_db: Database, server: ImageServer
) -> None:
    clock = FakeClock()
    client = make_client(sqlite_db, clock=clock)
    headers = make_headers(sqlite_db, "admin")
    server.add_file("/known.jpg", jpeg_bytes(color=(200, 20, 20)))
    server.add_file("/new.jpg", jpeg_bytes(color=(20, 20, 200)))
    first = _classify(client, headers, [server.url("/known.jpg")])
    assert first.status_code == 200, first.text
    [known] = first.json()["results"]
    assert client.get("/readyz").json()["status"] == "ready"

    with full_disk(sqlite_db) as disk:
        # The cached image is revalidated (304); recording that cannot be written, and
        # the answer is served anyway.
        cached = _classify(client, headers, [server.url("/known.jpg")])
        assert cached.status_code == 200, cached.text
        [again] = cached.json()["results"]
        assert again["status"] == "cached" and again["image_key"] == known["image_key"]
        assert disk.failures >= 1

        # A new image cannot be stored: 503 with a clear message, not a 500.
        fresh = _classify(client, headers, [server.url("/new.jpg")])
        assert fresh.status_code == 503, fresh.text
        error = fresh.json()["error"]
        assert error["code"] == "storage_unavailable"
        assert "disk is full" in error["message"]
        assert fresh.headers["Retry-After"] == "30"

        fix = client.put(
            f"/v1/images/{known['image_key']}/fix",
            headers=headers,
            json={
                "advertiser_id": "dealer-1",
                "scope": "global",
                "image_type": "Dealer",
                "color": "Red",
            },
        )
        assert fix.status_code == 503 and fix.json()["error"]["code"] == "storage_unavailable"

        # Liveness stays 200 (a restart frees no disk) but says what is wrong;
        # readiness fails.
        health = client.get("/healthz")
        assert health.status_code == 200
        assert health.json()["status"] == "degraded"
        assert "disk is full" in health.json()["storage"]["problem"]
        clock.advance(5)  # past the probe's reuse window: /readyz probes again
        ready = client.get("/readyz")
        assert ready.status_code == 503
        assert ready.json()["error"]["code"] == "storage_unavailable"
        assert "disk is full" in ready.json()["error"]["message"]

    clock.advance(5)
    assert client.get("/readyz").status_code == 200  # space freed: ready again
    health = client.get("/healthz").json()
    assert health["status"] == "ok" and health["storage"]["problem"] is None
    # Operators see which backbone answers (the test session serves the fp32 one).
    assert health["backbone"] == "efficientnet-lite0-ft@66f7335f"
    metrics = client.get("/metrics").text
    assert 'cartag_storage_errors_total{operation="revalidation"}' in metrics
    assert 'cartag_storage_errors_total{operation="request"}' in metrics


def test_a_server_stops_only_after_the_probe_healthz_started(
    make_client: AppFactory, db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    # /healthz probes on a thread of its own; were it still writing when the app stopped
    # and the database was disposed, its connection would stay open (a ResourceWarning
    # from psycopg, whenever the garbage collector came by).
    done = threading.Event()
    probe = health_module.probe_database

    def slow_probe(database: Database) -> None:
        time.sleep(0.3)
        probe(database)
        done.set()

    monkeypatch.setattr(health_module, "probe_database", slow_probe)
    client = make_client(db)
    assert client.get("/healthz").status_code == 200
    client.__exit__(None, None, None)
    assert done.is_set()


def test_every_operation_documents_the_503_of_a_store_that_fails(
    make_client: AppFactory, sqlite_db: Database
) -> None:
    # Every /v1 call and every /monitor page reads its key or session from the store,
    # and a failing store is a 503 (the fix above); the schema, which the README says
    # documents every status a route gives, listed it for classify and job submission
    # only. Liveness alone answers 200 whatever the store does.
    paths = make_client(sqlite_db).get("/openapi.json").json()["paths"]
    undocumented = [
        f"{method.upper()} {path}"
        for path, operations in paths.items()
        if path != "/healthz"
        for method, operation in operations.items()
        if "503" not in operation["responses"]
    ]
    assert undocumented == []
