"""/v1/models and /v1/advertisers: list, promote (immediate reload), rollback, re-classify."""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy import delete, select, update

from cartag.api.app import create_app
from cartag.api.state import AppState
from cartag.clock import SystemClock
from cartag.deploy import registry
from cartag.models.classifier import BUNDLED_DIR, Classifier, read_config
from cartag.settings import Settings
from cartag.store import images as image_repo
from cartag.store.cache import InMemoryLookupCache
from cartag.store.db import Database
from cartag.store.tables import EmbeddingRow, ImageRow, ReclassifyRequestRow
from tests.api.conftest import make_headers
from tests.support.http_server import ImageServer
from tests.support.images import jpeg_bytes, real_photos
from tests.support.models import make_model_dir, type_metrics

BUNDLED_VERSION = str(read_config(BUNDLED_DIR)["version"])
# Longer ago than any job lease.
LONG_AGO = dt.timedelta(hours=2)


def _register(db: Database, settings: Settings, classifier: Classifier, folder: Path) -> str:
    row = registry.register_model(
        db, settings, folder, created_by="test", clock=SystemClock(), reuse=classifier
    )
    return row.version


def _state(client: TestClient) -> AppState:
    state: AppState = client.app.state.cartag  # type: ignore[attr-defined]
    return state


def _classify(
    client: TestClient, headers: dict[str, str], advertiser: str, urls: list[str]
) -> list[dict[str, Any]]:
    body = {"advertiser_id": advertiser, "images": [{"url": u} for u in urls]}
    response = client.post("/v1/classify", json=body, headers=headers)
    assert response.status_code == 200, response.text
    results: list[dict[str, Any]] = response.json()["results"]
    return results


def test_list_promote_and_rollback(
    client: TestClient,
    db: Database,
    settings: Settings,
    classifier: Classifier,
    server: ImageServer,
    tmp_path: Path,
) -> None:
    admin = make_headers(db, "admin")
    listed = client.get("/v1/models", headers=admin).json()
    assert listed["serving"] == BUNDLED_VERSION
    assert listed["aliases"] == {"production": BUNDLED_VERSION}
    assert [v["version"] for v in listed["versions"]] == [BUNDLED_VERSION]

    version = _register(db, settings, classifier, make_model_dir(tmp_path / "m", "api-2"))
    promoted = client.post(f"/v1/models/{version}/promote", headers=admin, json={})
    assert promoted.status_code == 200, promoted.text
    body = promoted.json()
    # The receiving server reloads at once, without waiting for its poll.
    assert body["serving"] == "api-2" and body["deployment"]["reason"] == "promote"
    assert body["reclassify"] == "no opted-in advertisers"

    server.add_file("/new.jpg", jpeg_bytes(color=(20, 40, 200)))
    [result] = _classify(client, admin, "a", [server.url("/new.jpg")])
    assert result["model_version"] == "api-2"

    detail = client.get("/v1/models/api-2", headers=admin).json()
    assert detail["aliases"] == ["production"] and detail["card"]["config"]["version"] == "api-2"
    history = client.get("/v1/models/history", headers=admin).json()
    assert [(h["version"], h["reason"]) for h in history] == [
        (BUNDLED_VERSION, "initial"),
        ("api-2", "promote"),
    ]

    back = client.post("/v1/models/rollback", headers=admin)
    assert back.status_code == 200 and back.json()["serving"] == BUNDLED_VERSION
    again = client.post("/v1/models/rollback", headers=admin)
    assert again.status_code == 409 and "no earlier version" in again.json()["error"]["message"]


def test_errors_roles_and_gates(
    client: TestClient,
    db: Database,
    settings: Settings,
    classifier: Classifier,
    classify_headers: dict[str, str],
    tmp_path: Path,
) -> None:
    admin = make_headers(db, "admin")
    assert client.post("/v1/models/rollback", headers=classify_headers).status_code == 403
    assert client.get("/v1/models").status_code == 401
    missing = client.post("/v1/models/nope/promote", headers=admin)
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "not_found"
    bad_alias = client.post(
        f"/v1/models/{BUNDLED_VERSION}/promote", headers=admin, json={"alias": "staging"}
    )
    assert bad_alias.status_code == 422 and bad_alias.json()["error"]["field"] == "alias"

    registry.record_metrics(db, BUNDLED_VERSION, type_metrics({"Dealer": 0.9, "Stock": 0.9}))
    folder = make_model_dir(tmp_path / "w", "worse")
    registry.register_model(
        db,
        settings,
        folder,
        created_by="t",
        clock=SystemClock(),
        reuse=classifier,
        metrics=type_metrics({"Dealer": 0.9, "Stock": 0.5}),
    )
    gated = client.post("/v1/models/worse/promote", headers=admin)
    assert gated.status_code == 409
    error = gated.json()["error"]
    assert error["code"] == "promotion_gated" and "Stock" in error["message"]
    assert client.get("/v1/models", headers=admin).json()["serving"] == BUNDLED_VERSION
    forced = client.post("/v1/models/worse/promote", headers=admin, json={"force": True})
    assert forced.status_code == 200 and forced.json()["serving"] == "worse"


def test_a_model_whose_files_broke_is_not_promoted_and_the_old_one_keeps_serving(
    client: TestClient,
    db: Database,
    settings: Settings,
    classifier: Classifier,
    server: ImageServer,
    tmp_path: Path,
) -> None:
    admin = make_headers(db, "admin")
    version = _register(db, settings, classifier, make_model_dir(tmp_path / "m", "damaged"))
    npz = settings.data_dir / "models" / version / "color_head.npz"
    npz.write_bytes(npz.read_bytes()[:200])
    for body in ({}, {"force": True}):
        response = client.post(f"/v1/models/{version}/promote", headers=admin, json=body)
        assert response.status_code == 409, response.text
        error = response.json()["error"]
        assert error["code"] == "model_unloadable"
        assert "changed since it was registered" in error["message"]
    listed = client.get("/v1/models", headers=admin).json()
    assert listed["serving"] == BUNDLED_VERSION
    assert listed["aliases"] == {"production": BUNDLED_VERSION}
    server.add_file("/x.jpg", jpeg_bytes())
    [result] = _classify(client, admin, "a", [server.url("/x.jpg")])
    assert result["status"] == "classified" and result["model_version"] == BUNDLED_VERSION


def _wait_background(state: AppState, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while state.background and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not state.background, "the re-classification did not finish"


def test_promotion_reclassifies_opted_in_advertisers_from_cached_embeddings(
    make_client: Callable[..., TestClient],
    shared_data: Path,
    db: Database,
    settings: Settings,
    classifier: Classifier,
    server: ImageServer,
    tmp_path: Path,
) -> None:
    # A read-through cache in front of the store (Redis in production): re-classified
    # answers must not be served stale from it.
    client = make_client(db, lookup_cache=InMemoryLookupCache())
    admin = make_headers(db, "admin")
    for name, photo in zip(("a1", "a2", "b1"), real_photos(shared_data, 3), strict=True):
        server.add_file(f"/{name}.jpg", photo.read_bytes())
    a1, a2 = _classify(client, admin, "A", [server.url("/a1.jpg"), server.url("/a2.jpg")])
    [b1] = _classify(client, admin, "B", [server.url("/b1.jpg")])
    fixed = client.put(
        f"/v1/images/{a1['image_key']}/fix",
        headers=admin,
        json={
            "advertiser_id": "A",
            "on_behalf_of": "alice",
            "scope": "advertiser",
            "image_type": "Dealer",
            "color": "Purple",
        },
    )
    assert fixed.status_code == 200, fixed.text
    opt_in = client.put("/v1/advertisers/A", headers=admin, json={"reclassify_on_promote": True})
    assert opt_in.status_code == 200 and opt_in.json()["reclassify_on_promote"] is True
    assert client.put("/v1/advertisers/B", headers=admin, json={}).status_code == 422
    listed = client.get("/v1/advertisers", headers=admin).json()["items"]
    # Every advertiser with images is listed (B has no settings), with its counts.
    assert [
        (a["advertiser_id"], a["images"], a["overrides"], a["reclassify_on_promote"])
        for a in listed
    ] == [("A", 2, 1, True), ("B", 1, 0, False)]

    # A second look at A's inventory fills the read-through cache with today's answers.
    _classify(client, admin, "A", [server.url("/a1.jpg"), server.url("/a2.jpg")])
    with db.read() as session:
        a2_row = image_repo.get_images(session, [a2["image_key"]])[a2["image_key"]]
        before, a2_sha = a2_row.type_scores, a2_row.content_sha256
    # a2's cached vectors are lost: it is downloaded again (and its vectors cached anew).
    with db.write() as session:
        session.execute(delete(EmbeddingRow).where(EmbeddingRow.content_sha256 == a2_sha))
    folder = make_model_dir(tmp_path / "m", "reclass-2", temperature_scale=2.0)
    version = _register(db, settings, classifier, folder)
    server.reset_counters()
    response = client.post(f"/v1/models/{version}/promote", headers=admin)
    assert response.status_code == 200 and response.json()["reclassify"] == "started"
    _wait_background(_state(client))

    # Same backbone: a1 came from cached embeddings, only a2 was downloaded.
    assert [r.path for r in server.requests()] == ["/a2.jpg"]
    stored = select(EmbeddingRow.backbone_id).where(EmbeddingRow.content_sha256 == a2_sha)
    with db.read() as session:
        assert set(session.scalars(stored)) == {classifier.backbone_id, "vehicle-lab-v1"}
    with db.read() as session:
        rows = image_repo.get_images(session, [a1["image_key"], a2["image_key"], b1["image_key"]])
    assert rows[a1["image_key"]].model_version == version
    assert rows[a2["image_key"]].model_version == version
    assert rows[a2["image_key"]].type_scores != before  # the new head's scores
    assert rows[b1["image_key"]].model_version == BUNDLED_VERSION  # B did not opt in

    again = _classify(client, admin, "A", [server.url("/a1.jpg"), server.url("/a2.jpg")])
    assert again[0]["color"] == "Purple" and again[0]["color_source"] == "override"
    assert again[0]["model_version"] == version and again[1]["model_version"] == version

    # Explicit runs: one advertiser must have opted in.
    refused = client.post("/v1/models/reclassify", headers=admin, json={"advertiser_id": "B"})
    assert refused.status_code == 409 and "opted in" in refused.json()["error"]["message"]
    ran = client.post("/v1/models/reclassify", headers=admin, json={"advertiser_id": "A"})
    assert ran.status_code == 202 and ran.json() == {"reclassify": "started"}
    _wait_background(_state(client))


def test_a_rollback_reclassifies_the_opted_in_advertisers_as_a_promotion_does(
    client: TestClient,
    db: Database,
    settings: Settings,
    classifier: Classifier,
    server: ImageServer,
    tmp_path: Path,
) -> None:
    admin = make_headers(db, "admin")
    for name, color in (("a1", (200, 30, 30)), ("b1", (30, 30, 200))):
        server.add_file(f"/{name}.jpg", jpeg_bytes(color=color))
    [a1] = _classify(client, admin, "A", [server.url("/a1.jpg")])
    [b1] = _classify(client, admin, "B", [server.url("/b1.jpg")])
    for advertiser in ("A", "B"):
        opted = client.put(
            f"/v1/advertisers/{advertiser}", headers=admin, json={"reclassify_on_promote": True}
        )
        assert opted.status_code == 200
    version = _register(
        db, settings, classifier, make_model_dir(tmp_path / "m", "back-2", temperature_scale=2.0)
    )
    assert client.post(f"/v1/models/{version}/promote", headers=admin).json()["reclassify"] == (
        "started"
    )
    _wait_background(_state(client))
    opted_out = client.put(
        "/v1/advertisers/B", headers=admin, json={"reclassify_on_promote": False}
    )
    assert opted_out.status_code == 200

    back = client.post("/v1/models/rollback", headers=admin)
    assert back.status_code == 200 and back.json()["reclassify"] == "started"
    _wait_background(_state(client))
    with db.read() as session:
        rows = image_repo.get_images(session, [a1["image_key"], b1["image_key"]])
    assert rows[a1["image_key"]].model_version == BUNDLED_VERSION  # the restored model's answer
    assert rows[b1["image_key"]].model_version == version  # opted out: untouched


def _cut_off_reclassification(
    db: Database, slow: Settings, classifier: Classifier, server: ImageServer
) -> str:
    """A server stopped while its background re-classification of advertiser A's one
    image downloads it; that image keeps an earlier model's answer. Returns its key."""
    admin = make_headers(db, "admin")
    photo = jpeg_bytes(color=(200, 30, 30))
    server.add_file("/a1.jpg", photo)
    with TestClient(create_app(slow, db=db, classifier=classifier)) as first:
        [a1] = _classify(first, admin, "A", [server.url("/a1.jpg")])
        opted = first.put("/v1/advertisers/A", headers=admin, json={"reclassify_on_promote": True})
        assert opted.status_code == 200
        # An answer of an earlier model, and no cached vectors: the run downloads it.
        with db.write() as session:
            session.execute(delete(EmbeddingRow))
            session.execute(
                update(ImageRow)
                .where(ImageRow.image_key == a1["image_key"])
                .values(model_version="earlier-1")
            )
        server.add_slow("/a1.jpg", 20, photo)
        started = first.post("/v1/models/reclassify", headers=admin, json={})
        assert started.status_code == 202, started.text
        deadline = time.monotonic() + 30
        while not server.requests_for("/a1.jpg") and time.monotonic() < deadline:
            time.sleep(0.02)
        assert server.requests_for("/a1.jpg")
    server.add_file("/a1.jpg", photo)
    key: str = a1["image_key"]
    return key


def test_a_reclassification_cut_off_by_a_server_stop_is_reported_until_finished(
    db: Database, settings: Settings, classifier: Classifier, server: ImageServer
) -> None:
    # The server stopped while its background re-classification downloaded: nothing
    # recorded it, so after the restart the images not reached kept the previous model's
    # answers and nothing said so.
    slow = settings.model_copy(update={"read_timeout_s": 60.0, "download_deadline_s": 120.0})
    admin = make_headers(db, "admin")
    a1 = {"image_key": _cut_off_reclassification(db, slow, classifier, server)}
    # Stopped mid-download (the lifespan cancelled the run). The next start reports it.
    with TestClient(create_app(slow, db=db, classifier=classifier)) as second:
        health = second.get("/healthz").json()
    [pending] = health["reclassify_incomplete"]
    assert pending["version"] == BUNDLED_VERSION and pending["advertiser_id"] is None
    assert pending["requested_by"] == "test" and pending["progress_at"] is None
    with db.read() as session:
        row = image_repo.get_images(session, [a1["image_key"]])[a1["image_key"]]
    assert row.model_version == "earlier-1"

    # A run of production over every opted-in advertiser finishes it.
    with TestClient(create_app(slow, db=db, classifier=classifier)) as third:
        assert third.post("/v1/models/reclassify", headers=admin, json={}).status_code == 202
        _wait_background(_state(third))
        assert third.get("/healthz").json()["reclassify_incomplete"] == []
    with db.read() as session:
        row = image_repo.get_images(session, [a1["image_key"]])[a1["image_key"]]
    assert row.model_version == BUNDLED_VERSION


def test_a_server_finishes_a_reclassification_whose_run_stopped_by_itself(
    db: Database, settings: Settings, classifier: Classifier, server: ImageServer
) -> None:
    # Reported, the cut-off run still waited for someone to run `cartag models
    # reclassify`: once its lease has passed, a server of production takes it over.
    slow = settings.model_copy(update={"read_timeout_s": 60.0, "download_deadline_s": 120.0})
    key = _cut_off_reclassification(db, slow, classifier, server)
    with db.write() as session:  # the lease passes
        session.execute(
            update(ReclassifyRequestRow).values(requested_at=SystemClock().now() - LONG_AGO)
        )
    with TestClient(create_app(slow, db=db, classifier=classifier)) as second:
        deadline = time.monotonic() + 30
        while second.get("/healthz").json()["reclassify_incomplete"]:
            assert time.monotonic() < deadline, "the stopped run was not taken over"
            time.sleep(0.05)
    with db.read() as session:
        row = image_repo.get_images(session, [key])[key]
        [request] = session.scalars(select(ReclassifyRequestRow))
    assert row.model_version == BUNDLED_VERSION
    assert (request.outcome, request.requested_by) == ("done", "test")
