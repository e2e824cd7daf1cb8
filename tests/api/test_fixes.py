"""Fixes through the API: roles, resolution order, audit history, conflicts."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient

from cartag.store.db import Database
from tests.support.factories import add_image
from tests.support.http_server import ImageServer
from tests.support.images import jpeg_bytes

pytestmark = pytest.mark.slow


def _classify_one(
    client: TestClient, headers: dict[str, str], url: str, advertiser: str, **image: Any
) -> dict[str, Any]:
    body = {"advertiser_id": advertiser, "images": [{"url": url, **image}]}
    response = client.post("/v1/classify", json=body, headers=headers)
    assert response.status_code == 200, response.text
    result: dict[str, Any] = response.json()["results"][0]
    return result


def _fix(client: TestClient, headers: dict[str, str], key: str, **body: Any) -> Any:
    return client.put(f"/v1/images/{key}/fix", json=body, headers=headers)


def test_fix_override_and_history(
    client: TestClient,
    classify_headers: dict[str, str],
    fixer_headers: dict[str, str],
    server: ImageServer,
) -> None:
    server.add_file("/car.jpg", jpeg_bytes(width=320, height=240, color=(180, 20, 20)))
    url = server.url("/car.jpg")
    model = _classify_one(client, classify_headers, url, "dealer-a")
    key = model["image_key"]

    response = _fix(
        client,
        fixer_headers,
        key,
        advertiser_id="dealer-a",
        scope="global",
        image_type="Dealer",
        color="Burgundy",
        comment="wine red",
        on_behalf_of="alice",
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["audit"]["changes"]["color"] == {"from": model["color"], "to": "Burgundy"}
    assert body["result"]["color"] == "Burgundy" and body["result"]["source"] == "fix"

    # The deprecated free-text "user" is read as on_behalf_of, never as who fixed.
    response = _fix(
        client,
        fixer_headers,
        key,
        advertiser_id="dealer-b",
        scope="advertiser",
        color="Red",
        user="bob",
    )
    assert response.status_code == 200, response.text
    assert (response.json()["audit"]["user"], response.json()["audit"]["on_behalf_of"]) == (
        "test",
        "bob",
    )

    a = _classify_one(client, classify_headers, url, "dealer-a")
    b = _classify_one(client, classify_headers, url, "dealer-b")
    c = _classify_one(client, classify_headers, url, "dealer-c", scrape_color="Blue")
    assert (a["color"], a["source"], a["status"]) == ("Burgundy", "fix", "cached")
    assert (b["color"], b["color_source"], b["type_source"]) == ("Red", "override", "fix")
    assert (c["color"], c["color_source"]) == ("Burgundy", "fix")  # a fix beats the scraper

    history = client.get(f"/v1/images/{key}/history", headers=classify_headers).json()
    # Who fixed is the key's name (the fixture's key is called "test").
    assert [(e["user"], e["on_behalf_of"]) for e in history["entries"]] == [
        ("test", "alice"),
        ("test", "bob"),
    ]
    assert [e["scope"] for e in history["entries"]] == ["global", "advertiser"]
    assert history["entries"][0]["comment"] == "wine red"
    assert history["model"]["color"] == model["color"]

    conflicts = client.get("/v1/conflicts", headers=classify_headers).json()
    assert conflicts["total"] == 1
    assert conflicts["items"][0]["image_key"] == key
    assert conflicts["items"][0]["fields"] == ["color"]


def test_placeholder_never_has_a_color(
    client: TestClient,
    classify_headers: dict[str, str],
    fixer_headers: dict[str, str],
    server: ImageServer,
) -> None:
    server.add_file("/card.jpg", jpeg_bytes(color=(240, 240, 240)))
    url = server.url("/card.jpg")
    key = _classify_one(client, classify_headers, url, "a")["image_key"]
    assert (
        _fix(
            client, fixer_headers, key, advertiser_id="a", scope="global", image_type="Placeholder"
        ).status_code
        == 200
    )
    result = _classify_one(client, classify_headers, url, "a", scrape_color="Red")
    assert (result["image_type"], result["color"], result["color_source"]) == (
        "Placeholder",
        None,
        None,
    )


def test_low_confidence_is_cleared_by_a_type_fix(
    client: TestClient,
    db: Database,
    classify_headers: dict[str, str],
    fixer_headers: dict[str, str],
) -> None:
    unsure = add_image(db, image_type="Stock", confidence=0.4).image_key
    sure = add_image(db, image_type="Dealer", confidence=0.95).image_key

    def answer(key: str, advertiser: str) -> dict[str, Any]:
        response = client.get(
            f"/v1/images/{key}", params={"advertiser_id": advertiser}, headers=classify_headers
        )
        assert response.status_code == 200, response.text
        result: dict[str, Any] = response.json()
        return result

    assert answer(unsure, "a")["low_confidence"] is True
    assert answer(sure, "a")["low_confidence"] is False
    color_only = _fix(client, fixer_headers, unsure, advertiser_id="a", scope="global", color="Red")
    # The model still decided the type, so the result still needs a look.
    assert color_only.json()["result"]["low_confidence"] is True
    typed = _fix(
        client, fixer_headers, unsure, advertiser_id="a", scope="advertiser", image_type="Dealer"
    )
    assert typed.json()["result"]["low_confidence"] is False
    assert (answer(unsure, "a")["type_source"], answer(unsure, "a")["low_confidence"]) == (
        "override",
        False,
    )
    assert answer(unsure, "b")["low_confidence"] is True  # another advertiser: no override


def test_fix_errors_name_the_field(
    client: TestClient,
    classify_headers: dict[str, str],
    fixer_headers: dict[str, str],
    server: ImageServer,
) -> None:
    server.add_file("/car.jpg", jpeg_bytes())
    key = _classify_one(client, classify_headers, server.url("/car.jpg"), "a")["image_key"]

    bad_color = _fix(client, fixer_headers, key, advertiser_id="a", scope="global", color="Teal")
    assert bad_color.status_code == 422 and bad_color.json()["error"]["field"] == "color"
    bad_scope = _fix(client, fixer_headers, key, advertiser_id="a", scope="everyone", color="Red")
    assert bad_scope.status_code == 422 and bad_scope.json()["error"]["field"] == "scope"
    nothing = _fix(client, fixer_headers, key, advertiser_id="a", scope="global")
    assert nothing.status_code == 422 and nothing.json()["error"]["field"] == "image_type"
    unknown = _fix(
        client, fixer_headers, "v1:missing", advertiser_id="a", scope="global", color="Red"
    )
    assert unknown.status_code == 404 and "image_key" in unknown.json()["error"]["message"]
    assert client.get("/v1/images/v1:missing/history", headers=fixer_headers).status_code == 404


def test_roles_are_enforced(
    client: TestClient,
    classify_headers: dict[str, str],
    fixer_headers: dict[str, str],
) -> None:
    body = {"advertiser_id": "a", "images": [{"url": "http://127.0.0.1:9/x.jpg"}]}
    missing = client.post("/v1/classify", json=body)
    assert missing.status_code == 401 and missing.json()["error"]["code"] == "unauthorized"
    wrong = client.post("/v1/classify", json=body, headers={"Authorization": "Bearer ctg_00_x"})
    assert wrong.status_code == 401
    assert client.post("/v1/classify", json=body, headers=fixer_headers).status_code == 403
    fix = {"advertiser_id": "a", "scope": "global", "color": "Red"}
    denied = client.put("/v1/images/v1:x/fix", json=fix, headers=classify_headers)
    assert denied.status_code == 403 and "fixer" in denied.json()["error"]["message"]
