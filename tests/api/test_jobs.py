"""Jobs: submitted at once, processed in the background, survive a restart, call back."""

from __future__ import annotations

import time
from typing import Any

import pytest
from fastapi.testclient import TestClient

from cartag.api.app import create_app
from cartag.models.classifier import Classifier
from cartag.settings import Settings
from cartag.store.db import Database
from tests.api.conftest import AppFactory, make_headers
from tests.support.http_server import ImageServer
from tests.support.images import jpeg_bytes

pytestmark = pytest.mark.slow


def _wait_done(client: TestClient, headers: dict[str, str], job_id: str) -> dict[str, Any]:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        job: dict[str, Any] = client.get(f"/v1/jobs/{job_id}", headers=headers).json()
        if job["status"] in ("done", "failed"):
            return job
        time.sleep(0.05)
    raise AssertionError(f"job {job_id} did not finish: {job}")


def _serve(server: ImageServer, n: int) -> list[dict[str, Any]]:
    images = []
    for i in range(n):
        server.add_file(f"/{i}.jpg", jpeg_bytes(color=(20 * i % 255, 60, 200 - 10 * i)))
        images.append({"url": server.url(f"/{i}.jpg")})
    return images


def test_job_runs_in_background_and_calls_back(
    client: TestClient, classify_headers: dict[str, str], server: ImageServer
) -> None:
    images = _serve(server, 5) + [{"url": server.url("/missing.jpg")}]
    server.add_json_sink("/hook")
    body = {"advertiser_id": "a", "images": images, "callback_url": server.url("/hook")}
    response = client.post("/v1/jobs", json=body, headers=classify_headers)
    assert response.status_code == 202, response.text
    submitted = response.json()
    assert submitted["status"] in ("queued", "running") and submitted["total"] == 6

    job = _wait_done(client, classify_headers, submitted["id"])
    assert job["status"] == "done" and job["done"] == 6 and job["progress"] == 1.0
    assert [r["url"] for r in job["results"]] == [i["url"] for i in images]
    assert job["results"][-1]["reason"] == "http_404"
    deadline = time.monotonic() + 10
    while not server.received("/hook") and time.monotonic() < deadline:
        time.sleep(0.05)
    (hook,) = server.received("/hook")
    assert hook["job_id"] == submitted["id"] and hook["status"] == "done"
    assert len(hook["results"]) == 6
    assert (
        client.get(f"/v1/jobs/{submitted['id']}", headers=classify_headers).json()[
            "callback_status"
        ]
        == "delivered:200"
    )


def test_job_survives_a_restart(
    make_client: AppFactory,
    sqlite_db: Database,
    server: ImageServer,
    settings: Settings,
    classifier: Classifier,
) -> None:
    headers = make_headers(sqlite_db, "classifier")
    images = _serve(server, 3)
    app = create_app(settings, db=sqlite_db, classifier=classifier, run_jobs=False)
    with TestClient(app) as stopped:
        job_id = stopped.post(
            "/v1/jobs", json={"advertiser_id": "a", "images": images}, headers=headers
        ).json()["id"]
        assert stopped.get(f"/v1/jobs/{job_id}", headers=headers).json()["status"] == "queued"

    restarted = make_client(sqlite_db)
    job = _wait_done(restarted, headers, job_id)
    assert job["status"] == "done" and len(job["results"]) == 3


def test_callback_to_a_blocked_address_is_refused(
    client: TestClient, classify_headers: dict[str, str], server: ImageServer
) -> None:
    body = {
        "advertiser_id": "a",
        "images": _serve(server, 1),
        "callback_url": "http://169.254.169.254/hook",
    }
    job_id = client.post("/v1/jobs", json=body, headers=classify_headers).json()["id"]
    _wait_done(client, classify_headers, job_id)
    deadline = time.monotonic() + 10
    status = None
    while time.monotonic() < deadline:
        status = client.get(f"/v1/jobs/{job_id}", headers=classify_headers).json()[
            "callback_status"
        ]
        if status:
            break
        time.sleep(0.05)
    assert status == "failed:blocked_address"
