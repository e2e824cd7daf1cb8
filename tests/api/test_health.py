"""/healthz names the model served and, when it is not production's, says why."""

from __future__ import annotations

import time
from pathlib import Path

from fastapi.testclient import TestClient

from cartag.clock import FakeClock
from cartag.models.classifier import Classifier
from cartag.settings import Settings
from cartag.store.db import Database
from tests.api.conftest import AppFactory
from tests.support.registry import damage, make_scene, register_and_promote


def _health_until(client: TestClient, done: str, timeout_s: float = 30) -> dict[str, object]:
    deadline = time.monotonic() + timeout_s
    while True:
        body: dict[str, object] = client.get("/healthz").json()
        if body["model_version"] == done or time.monotonic() > deadline:
            return body
        time.sleep(0.1)


def test_healthz_reports_production(make_client: AppFactory, db: Database) -> None:
    body = make_client(db).get("/healthz").json()
    assert body["production_version"] == body["model_version"]
    assert body["fallback"] is False and body["fallback_reason"] is None


def test_healthz_says_a_server_falls_back_and_when_it_stops(
    make_client: AppFactory,
    sqlite_db: Database,
    settings: Settings,
    classifier: Classifier,
    tmp_path: Path,
) -> None:
    settings = settings.model_copy(update={"model_poll_s": 0.1})
    scene = make_scene(sqlite_db, settings, classifier, tmp_path / "sources", FakeClock())
    register_and_promote(scene, "prod-2")
    damage(scene, "prod-2")  # after registration and promotion, before this server starts

    client = make_client(sqlite_db, settings=settings, classifier=None)
    health = client.get("/healthz")
    # The server answers: liveness stays 200 and the store is fine, but it says so.
    assert health.status_code == 200
    body = health.json()
    assert body["status"] == "ok"
    assert body["model_version"] == scene.initial
    assert body["production_version"] == "prod-2"
    assert body["fallback"] is True
    assert body["fallback_reason"].startswith(
        "production model prod-2 cannot serve here: the files of model prod-2 in "
    )
    assert "changed since it was registered" in body["fallback_reason"]
    assert "cartag_model_fallback{" in client.get("/metrics").text

    # A fixed version promoted later is swapped in by the poller: no more fallback.
    scene.clock.advance(1)
    register_and_promote(scene, "prod-3")
    body = _health_until(client, "prod-3")
    assert body["model_version"] == "prod-3" and body["production_version"] == "prod-3"
    assert body["fallback"] is False and body["fallback_reason"] is None
