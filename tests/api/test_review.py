"""The review API and pages through the HTTP interface: auth, roles, cookie login, errors."""

from __future__ import annotations

import io
from typing import Any

import pytest
from fastapi.testclient import TestClient
from PIL import Image
from sqlalchemy import update

from cartag.store import apikeys
from cartag.store.blobs import MemoryBlobStore
from cartag.store.db import Database
from cartag.store.tables import DatasetVersionRow
from tests.api.conftest import AppFactory, make_headers
from tests.support.browser import form_csrf, log_in
from tests.support.factories import NOW
from tests.web.seed import add_item, add_version, seed_review

pytestmark = pytest.mark.slow

Seeded = tuple[TestClient, str, dict[str, int]]


@pytest.fixture
def blobs() -> MemoryBlobStore:
    return MemoryBlobStore()


@pytest.fixture
def seeded(make_client: AppFactory, db: Database, blobs: MemoryBlobStore) -> Seeded:
    ref, ids = seed_review(db, blobs)
    return make_client(db, blobs=blobs), ref, ids


def _key(db: Database, name: str, *roles: str) -> str:
    with db.write() as session:
        _, key = apikeys.create_key(session, name=name, roles=list(roles), now=NOW)
    return key


def _error(response: Any, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    error: dict[str, Any] = response.json()["error"]
    return error


def test_roles(seeded: Seeded, db: Database) -> None:
    client, ref, _ = seeded
    url = f"/v1/datasets/{ref}/review/items"
    assert _error(client.get(url), 401)["code"] == "unauthorized"
    assert (
        _error(client.get(url, headers=make_headers(db, "classifier", "fixer")), 403)["code"]
        == "forbidden"
    )
    for role in ("reviewer", "admin"):
        assert client.get(url, headers=make_headers(db, role)).status_code == 200
    decide = {"item_id": 1, "action": "accept"}
    response = client.post(
        f"/v1/datasets/{ref}/review/decisions", json=decide, headers=make_headers(db, "fixer")
    )
    assert response.status_code == 403


def test_items_sorted_by_suspicion_with_filters(seeded: Seeded, db: Database) -> None:
    client, ref, ids = seeded
    headers = make_headers(db, "reviewer")
    body = client.get(f"/v1/datasets/{ref}/review/items", headers=headers).json()
    assert body["version"] == {"ref": ref, "name": "cars", "number": 2, "status": "draft"}
    assert body["total"] == 5
    names = {v: k for k, v in ids.items()}
    assert [names[i["id"]] for i in body["items"]] == [
        "stock",
        "flagged",
        "placeholder",
        "calm",
        "unranked",
    ]
    first = body["items"][0]
    assert first["model_label"] == "Stock"
    assert first["model_field"] == "image_type"
    assert first["thumb_url"] == f"/review/{ref}/thumb/{ids['stock']}"
    assert first["provenance"]["advertiser_id"].startswith("dealer-")
    assert first["last_decision"] is None

    def listed(**params: Any) -> list[str]:
        response = client.get(f"/v1/datasets/{ref}/review/items", params=params, headers=headers)
        assert response.status_code == 200, response.text
        return [names[i["id"]] for i in response.json()["items"]]

    assert listed(flagged="true") == ["flagged"]
    assert listed(status="excluded") == ["unreadable"]
    assert listed(color="Blue") == ["placeholder"]
    assert listed(image_type="Stock") == ["unranked"]
    assert listed(page=2, limit=2) == ["placeholder", "calm"]


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"status": "maybe"}, "status"),
        ({"limit": 0}, "limit"),
        ({"limit": 501}, "limit"),
        ({"page": 0}, "page"),
        ({"image_type": "Truck"}, "image_type"),
        ({"color": "Teal"}, "color"),
    ],
)
def test_bad_queries_are_422_naming_the_field(
    seeded: Seeded, db: Database, params: dict[str, Any], field: str
) -> None:
    client, ref, _ = seeded
    response = client.get(
        f"/v1/datasets/{ref}/review/items", params=params, headers=make_headers(db, "reviewer")
    )
    error = _error(response, 422)
    assert error["code"] == "invalid_input"
    assert error["field"] == field


def test_decisions_are_stored_applied_and_undone(seeded: Seeded, db: Database) -> None:
    client, ref, ids = seeded
    headers = {"Authorization": f"Bearer {_key(db, 'rita', 'reviewer')}"}
    url = f"/v1/datasets/{ref}/review/decisions"

    response = client.post(
        url,
        json={"item_id": ids["stock"], "action": "relabel", "label": "Stock"},
        headers=headers,
    )
    assert response.status_code == 200, response.text
    result = response.json()
    assert result["item"]["image_type"] == "Stock"
    assert result["item"]["last_decision"]["id"] == result["decision"]["id"]
    decision = result["decision"]
    assert (decision["action"], decision["from_label"], decision["to_label"]) == (
        "relabel",
        "Dealer",
        "Stock",
    )
    assert decision["user"] == "rita"
    assert decision["created_at"]

    response = client.post(
        url, json={"item_id": ids["flagged"], "action": "accept"}, headers=headers
    )
    assert response.json()["item"]["status"] == "included"
    response = client.post(
        url,
        json={"item_id": ids["calm"], "action": "relabel", "field": "color", "label": "Grey"},
        headers=headers,
    )
    assert response.json()["item"]["color"] == "Grey"
    response = client.post(url, json={"item_id": ids["calm"], "action": "exclude"}, headers=headers)
    assert (response.json()["item"]["status"], response.json()["item"]["reason"]) == (
        "excluded",
        "review",
    )

    undo = client.post(f"/v1/datasets/{ref}/review/items/{ids['calm']}/undo", headers=headers)
    assert undo.status_code == 200, undo.text
    assert undo.json()["decision"]["action"] == "exclude"
    assert undo.json()["decision"]["undone_by"] == "rita"
    item = undo.json()["item"]
    assert (item["status"], item["color"]) == ("included", "Grey")
    assert item["last_decision"]["action"] == "relabel"

    listed = client.get(url, headers=headers).json()
    assert [(d["action"], d["undone_at"] is not None) for d in listed] == [
        ("relabel", False),
        ("accept", False),
        ("relabel", False),
        ("exclude", True),
    ]
    one = client.get(url, params={"item_id": ids["flagged"]}, headers=headers).json()
    assert [d["action"] for d in one] == ["accept"]
    # Nothing left to undo on an item without decisions.
    again = client.post(f"/v1/datasets/{ref}/review/items/{ids['unranked']}/undo", headers=headers)
    assert _error(again, 409)["code"] == "conflict"


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"action": "accept"}, "item_id"),
        ({"item_id": 0, "action": "accept"}, "item_id"),
        # JSON has integers: true (once read as item 1) and "1" are not items.
        ({"item_id": True, "action": "accept"}, "item_id"),
        ({"item_id": "1", "action": "accept"}, "item_id"),
        ({"item_id": 1.5, "action": "accept"}, "item_id"),
        ({"item_id": "STOCK", "action": "relabel", "label": "Sto\0ck"}, "label"),
        ({"item_id": 1, "action": "approve"}, "action"),
        ({"item_id": 1, "action": "accept", "field": "make"}, "field"),
        ({"item_id": 1, "action": "accept", "extra": 1}, "extra"),
        ({"item_id": "STOCK", "action": "relabel"}, "label"),
        ({"item_id": "STOCK", "action": "relabel", "label": "Truck"}, "label"),
        # A relabel is a person's decision, as a fix is: nothing is guessed.
        ({"item_id": "STOCK", "action": "relabel", "label": "stock"}, "label"),
        ({"item_id": "STOCK", "action": "relabel", "field": "color", "label": "silver"}, "label"),
        ({"item_id": "STOCK", "action": "relabel", "field": "color", "label": "Red "}, "label"),
        ({"item_id": "STOCK", "action": "accept", "label": "Stock"}, "label"),
    ],
)
def test_bad_decisions_are_422_naming_the_field(
    seeded: Seeded, db: Database, body: dict[str, Any], field: str
) -> None:
    client, ref, ids = seeded
    if body.get("item_id") == "STOCK":
        body = {**body, "item_id": ids["stock"]}
    response = client.post(
        f"/v1/datasets/{ref}/review/decisions", json=body, headers=make_headers(db, "reviewer")
    )
    assert _error(response, 422)["field"] == field


def test_unknown_versions_foreign_items_and_frozen_versions(seeded: Seeded, db: Database) -> None:
    client, ref, ids = seeded
    headers = make_headers(db, "reviewer")
    foreign = add_item(db, add_version(db, "trucks", 1))
    accept = {"item_id": ids["stock"], "action": "accept"}
    assert (
        _error(
            client.post("/v1/datasets/nope@1/review/decisions", json=accept, headers=headers), 404
        )["code"]
        == "not_found"
    )
    assert client.get("/v1/datasets/nope@1/review/items", headers=headers).status_code == 404
    response = client.post(
        f"/v1/datasets/{ref}/review/decisions",
        json={"item_id": foreign, "action": "accept"},
        headers=headers,
    )
    assert _error(response, 404)["code"] == "not_found"
    assert (
        client.post(f"/v1/datasets/{ref}/review/items/{foreign}/undo", headers=headers).status_code
        == 404
    )
    unreadable = {"item_id": ids["unreadable"], "action": "accept"}
    response = client.post(f"/v1/datasets/{ref}/review/decisions", json=unreadable, headers=headers)
    assert "unreadable" in _error(response, 409)["message"]

    with db.write() as session:
        session.execute(
            update(DatasetVersionRow).where(DatasetVersionRow.ref == ref).values(status="frozen")
        )
    response = client.post(f"/v1/datasets/{ref}/review/decisions", json=accept, headers=headers)
    assert "frozen" in _error(response, 409)["message"]
    assert client.get(f"/v1/datasets/{ref}/review/items", headers=headers).status_code == 200


def test_cookie_login_and_csrf_header(seeded: Seeded, db: Database) -> None:
    client, ref, ids = seeded
    key = _key(db, "rita", "reviewer")
    page = client.get("/review", follow_redirects=False)
    assert page.status_code == 303
    assert page.headers["location"] == "/review/login?next=%2Freview"
    form = client.get("/review/login?next=/review/" + ref)
    assert form.status_code == 200 and 'name="key"' in form.text
    assert "default-src 'self'" in form.headers["content-security-policy"]
    csrf = form_csrf(form.text)

    bad = client.post("/review/login", data={"key": "ctg_nope_x", "next": "/review", "csrf": csrf})
    assert bad.status_code == 401 and "unknown API key" in bad.text
    classifier_key = _key(db, "scraper", "classifier")
    denied = client.post("/review/login", data={"key": classifier_key, "csrf": csrf})
    assert denied.status_code == 403 and "reviewer" in denied.text
    assert "cartag_session=" not in denied.headers.get("set-cookie", "")

    login = client.post(
        "/review/login",
        data={"key": key, "next": f"/review/{ref}", "csrf": csrf},
        follow_redirects=False,
    )
    assert login.status_code == 303
    assert login.headers["location"] == f"/review/{ref}"
    cookie = login.headers["set-cookie"].lower()
    assert "cartag_session=" in cookie and "httponly" in cookie and "samesite=strict" in cookie
    assert key.lower() not in cookie
    # An open redirect is refused.
    evil = log_in(client, "/review", key, next_url="//evil.example/x")
    assert evil.headers["location"] == "/review"

    # The cookie now authenticates the API; a change needs the CSRF header too.
    assert client.get(f"/v1/datasets/{ref}/review/items").status_code == 200
    accept = {"item_id": ids["stock"], "action": "accept"}
    refused = client.post(f"/v1/datasets/{ref}/review/decisions", json=accept)
    assert "X-Cartag-CSRF" in _error(refused, 403)["message"]
    done = client.post(
        f"/v1/datasets/{ref}/review/decisions", json=accept, headers={"X-Cartag-CSRF": "1"}
    )
    assert done.status_code == 200, done.text
    assert done.json()["decision"]["user"] == "rita"

    drafts = client.get("/review")
    assert drafts.status_code == 200
    assert f'href="/review/{ref}"' in drafts.text and "cars@1" not in drafts.text
    logout = client.post(
        "/review/logout", data={"csrf": form_csrf(drafts.text)}, follow_redirects=False
    )
    assert logout.status_code == 303
    assert client.get(f"/v1/datasets/{ref}/review/items").status_code == 401


def test_grid_page_and_static_files(seeded: Seeded, db: Database) -> None:
    client, ref, ids = seeded
    assert log_in(client, "/review", _key(db, "rita", "reviewer")).status_code == 303
    page = client.get(f"/review/{ref}")
    assert page.status_code == 200, page.text
    order = [page.text.index(f'id="item-{ids[n]}"') for n in ("stock", "flagged", "calm")]
    assert order == sorted(order)
    assert f'id="item-{ids["unreadable"]}"' not in page.text
    assert "1</kbd> Dealer" in page.text
    color = client.get(f"/review/{ref}?mode=color&flagged=1")
    assert "Burgundy" in color.text and color.text.count('class="card') == 1
    missing = client.get("/review/nope@1")
    assert missing.status_code == 404 and "does not exist" in missing.text
    # The drafts there are, not "no draft version to review".
    assert f'href="/review/{ref}"' in missing.text and "No draft version" not in missing.text
    stale = client.get(f"/review/{ref}", params={"after": 10**9})
    assert stale.status_code == 404 and f'href="/review/{ref}"' in stale.text
    script = client.get("/static/review.js")
    assert script.status_code == 200 and "/decisions" in script.text
    assert 'data-csrf-header="X-Cartag-CSRF"' in page.text
    assert client.get("/static/review.css").status_code == 200

    client.cookies.clear()
    # A classifier key gets no session.
    scraper = _key(db, "scraper", "classifier")
    assert log_in(client, "/review", scraper).status_code == 403


def test_thumbnails(seeded: Seeded, db: Database, blobs: MemoryBlobStore) -> None:
    client, ref, ids = seeded
    headers = make_headers(db, "reviewer")
    url = f"/review/{ref}/thumb/{ids['stock']}"
    assert client.get(url).status_code == 401
    response = client.get(url, headers=headers)
    assert response.status_code == 200
    assert response.headers["content-type"] == "image/jpeg"
    assert "max-age" in response.headers["cache-control"]
    image = Image.open(io.BytesIO(response.content))
    assert image.format == "JPEG" and max(image.size) <= 256
    again = client.get(url, headers={**headers, "If-None-Match": response.headers["etag"]})
    assert again.status_code == 304

    foreign = add_item(db, add_version(db, "trucks", 1), blobs)
    assert client.get(f"/review/{ref}/thumb/{foreign}", headers=headers).status_code == 404
    lost = add_item(db, ref)  # its blob was never stored
    assert _error(client.get(f"/review/{ref}/thumb/{lost}", headers=headers), 404)
    broken = add_item(db, ref, blob_path=blobs.put(b"not an image at all", "jpg"))
    assert (
        _error(client.get(f"/review/{ref}/thumb/{broken}", headers=headers), 422)["field"]
        == "item_id"
    )
