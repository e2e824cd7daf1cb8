"""Jobs: submitted at once, processed in the background, survive a restart, call back."""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from typing import Any

import pytest
from fastapi.testclient import TestClient
from pydantic import SecretStr
from sqlalchemy import select

from cartag.api.app import create_app
from cartag.jobs import callbacks
from cartag.jobs.dispatch import ChunkSender
from cartag.models.classifier import Classifier
from cartag.settings import Settings
from cartag.store import jobs as job_repo
from cartag.store import secrets as secret_repo
from cartag.store.db import Database
from cartag.store.tables import ImageRow, JobItemRow, UrlRow
from tests.api.conftest import AppFactory, make_headers
from tests.support.factories import NOW
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


def test_callback_to_a_blocked_address_is_refused_at_submit(
    client: TestClient, classify_headers: dict[str, str], server: ImageServer
) -> None:
    for hook in ("http://169.254.169.254/hook", "http://10.1.2.3/hook", "http://[::1]:80/x"):
        body = {"advertiser_id": "a", "images": _serve(server, 1), "callback_url": hook}
        response = client.post("/v1/jobs", json=body, headers=classify_headers)
        assert response.status_code == 422, response.text
        error = response.json()["error"]
        assert error["field"] == "callback_url" and "blocked_address" in error["message"]


def _wait_callback(client: TestClient, headers: dict[str, str], job_id: str) -> dict[str, Any]:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        job: dict[str, Any] = client.get(f"/v1/jobs/{job_id}", headers=headers).json()
        if job["callback_status"]:
            return job
        time.sleep(0.05)
    raise AssertionError(f"job {job_id} sent no callback")


def test_a_job_is_readable_by_its_key_and_admins_only(
    client: TestClient, db: Database, server: ImageServer
) -> None:
    owner, other, admin = (make_headers(db, r) for r in ("classifier", "classifier", "admin"))
    body = {"advertiser_id": "a", "images": _serve(server, 1)}
    job_id = client.post("/v1/jobs", json=body, headers=owner).json()["id"]
    assert _wait_done(client, owner, job_id)["status"] == "done"
    assert client.get(f"/v1/jobs/{job_id}", headers=admin).status_code == 200
    hidden = client.get(f"/v1/jobs/{job_id}", headers=other)
    unknown = client.get("/v1/jobs/00000000-0000-0000-0000-000000000000", headers=other)
    assert hidden.status_code == unknown.status_code == 404
    assert job_id in hidden.json()["error"]["message"]  # the same words as for an unknown id
    # A job made before owners were recorded: admins only.
    with db.write() as session:
        legacy = job_repo.create_job(
            session,
            advertiser_id="a",
            items=[("https://cdn.example/a.jpg", None)],
            callback_url=None,
            now=NOW,
        ).id
    assert client.get(f"/v1/jobs/{legacy}", headers=owner).status_code == 404
    assert client.get(f"/v1/jobs/{legacy}", headers=admin).status_code == 200


def test_jobs_answer_202_with_their_location_and_list_by_key(
    client: TestClient, db: Database, server: ImageServer
) -> None:
    owner, other, admin = (make_headers(db, r) for r in ("classifier", "classifier", "admin"))
    body = {"advertiser_id": "a", "images": _serve(server, 1)}
    submitted = [client.post("/v1/jobs", json=body, headers=owner) for _ in range(3)]
    assert {r.status_code for r in submitted} == {202}
    ids = [r.json()["id"] for r in submitted]
    for response, job_id in zip(submitted, ids, strict=True):
        assert response.headers["Location"] == f"/v1/jobs/{job_id}"
        assert client.get(response.headers["Location"], headers=owner).json()["id"] == job_id
    theirs = client.post("/v1/jobs", json=body, headers=other).json()["id"]
    for job_id in [*ids, theirs]:
        _wait_done(client, owner if job_id != theirs else other, job_id)

    mine = client.get("/v1/jobs", headers=owner).json()
    assert mine["total"] == 3 and {j["id"] for j in mine["jobs"]} == set(ids)
    assert all(j["results"] is None for j in mine["jobs"])  # the list carries no results
    page = client.get("/v1/jobs?limit=2&offset=2", headers=owner).json()
    assert (page["total"], len(page["jobs"]), page["offset"]) == (3, 1, 2)
    assert client.get("/v1/jobs?status=queued", headers=owner).json()["total"] == 0
    assert client.get("/v1/jobs?status=done", headers=owner).json()["total"] == 3
    everyone = client.get("/v1/jobs", headers=admin).json()
    assert {*ids, theirs} <= {j["id"] for j in everyone["jobs"]}
    assert client.get("/v1/jobs", headers=other).json()["total"] == 1
    bad = client.get("/v1/jobs?status=lost&limit=0", headers=owner)
    assert bad.status_code == 422
    assert bad.json()["error"]["code"] == "invalid_input"


def test_callbacks_are_signed_and_tokens_are_not_kept(
    client: TestClient, classify_headers: dict[str, str], server: ImageServer, db: Database
) -> None:
    server.add_json_sink("/hook")
    hook = server.url("/hook") + "?token=s3cr3t&id=7"
    body = {"advertiser_id": "a", "images": _serve(server, 2), "callback_url": hook}
    submitted = client.post("/v1/jobs", json=body, headers=classify_headers).json()
    assert submitted["callback_url"].endswith("/hook?token=***&id=7")
    job = _wait_callback(client, classify_headers, submitted["id"])
    assert job["callback_status"] == "delivered:200"

    (request,) = server.requests("/hook")
    assert request.path == "/hook?token=s3cr3t&id=7"  # the receiver got its token
    with db.write() as session:
        secret = secret_repo.get_or_create_secret(session, callbacks.SECRET_NAME, NOW)
        stored = job_repo.get_job(session, submitted["id"]).callback_url
    assert stored is not None and "s3cr3t" not in stored
    timestamp = request.headers["x-cartag-timestamp"]
    signature = request.headers["x-cartag-signature"]
    assert abs(int(timestamp) - time.time()) < 60 and signature.startswith("sha256=")
    assert callbacks.verify(secret, request.body, timestamp, signature, now=time.time())
    assert not callbacks.verify(secret, request.body + b" ", timestamp, signature, time.time())
    # A replay later than the tolerance is refused.
    assert not callbacks.verify(secret, request.body, timestamp, signature, time.time() + 301)
    # The receiver's recipe from the README.
    expected = hmac.new(
        secret.encode(), timestamp.encode() + b"." + request.body, hashlib.sha256
    ).hexdigest()
    assert hmac.compare_digest(signature, f"sha256={expected}")


def test_a_configured_secret_signs_callbacks(
    make_client: AppFactory, sqlite_db: Database, server: ImageServer, settings: Settings
) -> None:
    configured = settings.model_copy(update={"callback_secret": SecretStr("shared-secret")})
    client = make_client(sqlite_db, settings=configured)
    headers = make_headers(sqlite_db, "classifier")
    server.add_json_sink("/hook")
    body = {"advertiser_id": "a", "images": _serve(server, 1), "callback_url": server.url("/hook")}
    job_id = client.post("/v1/jobs", json=body, headers=headers).json()["id"]
    assert _wait_callback(client, headers, job_id)["callback_status"] == "delivered:200"
    (request,) = server.requests("/hook")
    assert callbacks.verify(
        "shared-secret",
        request.body,
        request.headers["x-cartag-timestamp"],
        request.headers["x-cartag-signature"],
        now=time.time(),
    )


def test_a_redirecting_callback_is_not_delivered(
    client: TestClient, classify_headers: dict[str, str], server: ImageServer
) -> None:
    server.add_json_sink("/elsewhere")
    server.add_redirect("/hook", server.url("/elsewhere"), status=307)
    body = {"advertiser_id": "a", "images": _serve(server, 1), "callback_url": server.url("/hook")}
    job_id = client.post("/v1/jobs", json=body, headers=classify_headers).json()["id"]
    assert _wait_callback(client, classify_headers, job_id)["callback_status"] == "failed:redirect"
    assert server.requests("/elsewhere") == []


def test_url_passwords_serve_the_download_only(
    client: TestClient, classify_headers: dict[str, str], server: ImageServer, db: Database
) -> None:
    server.add_file("/private.jpg", jpeg_bytes(color=(200, 30, 30)))
    url = server.url("/private.jpg").replace("http://", "http://alice:pa55word@")
    body = {"advertiser_id": "a", "images": [{"url": url}]}
    job_id = client.post("/v1/jobs", json=body, headers=classify_headers).json()["id"]
    job = _wait_done(client, classify_headers, job_id)
    (result,) = job["results"]
    assert result["status"] == "classified" and "alice:***@" in result["url"]
    (request,) = server.requests("/private.jpg")
    assert (
        request.headers["authorization"] == "Basic " + base64.b64encode(b"alice:pa55word").decode()
    )
    with db.read() as session:
        for table, column in (
            (JobItemRow, JobItemRow.url),
            (UrlRow, UrlRow.url),
            (ImageRow, ImageRow.url),
        ):
            (stored,) = session.scalars(select(column))
            assert "pa55word" not in stored and "alice:***@" in stored, table
        (stored_result,) = session.scalars(select(JobItemRow.result))
        assert stored_result is not None and "pa55word" not in str(stored_result)


class _DeadBroker(ChunkSender):
    def send(self, job_id: str, start: int, stop: int) -> None:
        raise ConnectionRefusedError(111, "Connection refused")


def test_a_job_the_broker_cannot_take_is_a_503_and_not_kept(
    make_client: AppFactory, db: Database
) -> None:
    client = make_client(db, chunk_sender=_DeadBroker())
    headers = make_headers(db, "classifier")
    body = {"advertiser_id": "a", "images": [{"url": "https://cdn.example/1.jpg"}]}
    response = client.post("/v1/jobs", json=body, headers=headers)
    assert response.status_code == 503, response.text
    assert response.json()["error"]["code"] == "queue_unavailable"
    assert response.headers["Retry-After"] == "30"
    assert client.get("/v1/jobs", headers=headers).json()["total"] == 0


def test_a_queued_job_can_be_cancelled_by_its_key_and_calls_back(
    make_client: AppFactory, db: Database, server: ImageServer
) -> None:
    client = make_client(db, run_jobs=False)  # nothing runs it: it stays queued
    owner, other, admin = (make_headers(db, r) for r in ("classifier", "classifier", "admin"))
    server.add_json_sink("/hook")
    body = {
        "advertiser_id": "a",
        "images": [{"url": "https://cdn.example/1.jpg"}],
        "callback_url": server.url("/hook"),
    }
    job_id = client.post("/v1/jobs", json=body, headers=owner).json()["id"]
    assert client.post(f"/v1/jobs/{job_id}/cancel", headers=other).status_code == 404
    cancelled = client.post(f"/v1/jobs/{job_id}/cancel", headers=owner)
    assert cancelled.status_code == 200, cancelled.text
    job = cancelled.json()
    assert job["status"] == "failed" and job["error"].startswith("cancelled by ")
    assert job["finished_at"] is not None
    again = client.post(f"/v1/jobs/{job_id}/cancel", headers=admin)
    assert again.status_code == 409 and "failed already" in again.json()["error"]["message"]
    deadline = time.monotonic() + 10
    while not server.received("/hook") and time.monotonic() < deadline:
        time.sleep(0.05)
    (hook,) = server.received("/hook")
    assert hook["job_id"] == job_id and hook["status"] == "failed"
    assert "cancelled" in (hook.get("error") or "")


def test_a_cancelled_job_keeps_the_results_stored_before_it_stopped(
    make_client: AppFactory, db: Database
) -> None:
    client = make_client(db, run_jobs=False)
    admin = make_headers(db, "admin")
    answered = {
        "url": "https://cdn.example/1.jpg",
        "image_key": None,
        "status": "skipped",
        **dict.fromkeys(("image_type", "color", "source", "type_source", "color_source")),
        "confidence": None,
        "reason": "http_404",
        "model_version": None,
    }
    with db.write() as session:
        job_id = job_repo.create_job(
            session,
            advertiser_id="a",
            items=[("https://cdn.example/1.jpg", None), ("https://cdn.example/2.jpg", None)],
            callback_url=None,
            now=NOW,
            results={0: answered},  # the first chunk was stored, the second never ran
        ).id
    assert client.post(f"/v1/jobs/{job_id}/cancel", headers=admin).status_code == 200
    job = client.get(f"/v1/jobs/{job_id}", headers=admin).json()
    assert job["status"] == "failed" and job["done"] == 1
    # The README's promise: "the results stored so far stay readable" (they were null).
    assert [(r["url"], r["reason"]) for r in job["results"]] == [
        ("https://cdn.example/1.jpg", "http_404")
    ]
