"""/v1/advertisers and /v1/advertisers/{id}/images: who has images, and what they were answered."""

from __future__ import annotations

from typing import Any, get_args

import pytest
from fastapi.testclient import TestClient

from cartag.api.schemas.advertisers import ColorFilter
from cartag.settings import Settings
from cartag.store import advertisers as advertiser_repo
from cartag.store import apikeys
from cartag.store.db import Database
from cartag.vocab import COLORS
from tests.api.conftest import make_headers
from tests.support.factories import NOW, add_image
from tests.support.http_server import ImageServer
from tests.support.images import noise_jpeg_bytes

pytestmark = pytest.mark.slow


def _classify(
    client: TestClient, headers: dict[str, str], advertiser: str, urls: list[str]
) -> list[dict[str, Any]]:
    body = {"advertiser_id": advertiser, "images": [{"url": url} for url in urls]}
    response = client.post("/v1/classify", json=body, headers=headers)
    assert response.status_code == 200, response.text
    results: list[dict[str, Any]] = response.json()["results"]
    return results


def test_advertisers_with_images_their_listing_and_thumbnails(
    client: TestClient,
    classify_headers: dict[str, str],
    fixer_headers: dict[str, str],
    server: ImageServer,
) -> None:
    # Random pixels: three photos that are not near duplicates of one another.
    for seed, name in enumerate(("red", "blue", "both")):
        server.add_file(f"/{name}.jpg", noise_jpeg_bytes(width=400, height=300, seed=seed))
    red, both = _classify(
        client, classify_headers, "dealer-42", [server.url("/red.jpg"), server.url("/both.jpg")]
    )
    _classify(
        client, classify_headers, "dealer-77", [server.url("/blue.jpg"), server.url("/both.jpg")]
    )
    # Advertisers without settings are listed as soon as they have images.
    listed = client.get("/v1/advertisers", headers=fixer_headers).json()["items"]
    assert [(a["advertiser_id"], a["images"], a["overrides"]) for a in listed] == [
        ("dealer-42", 2, 0),
        ("dealer-77", 2, 0),
    ]
    assert all(a["last_seen_at"] and a["updated_at"] is None for a in listed)

    fixed = client.put(
        f"/v1/images/{red['image_key']}/fix",
        json={"advertiser_id": "dealer-42", "scope": "advertiser", "image_type": "Dealer"},
        headers=fixer_headers,
    )
    assert fixed.status_code == 200, fixed.text

    page = client.get("/v1/advertisers/dealer-42/images", headers=fixer_headers)
    assert page.status_code == 200, page.text
    body = page.json()
    assert (body["total"], body["page"], body["pages"], body["counts"]["fixed"]) == (2, 1, 1, 1)
    items = {item["image_key"]: item for item in body["items"]}
    assert set(items) == {red["image_key"], both["image_key"]}
    mine = items[red["image_key"]]
    assert (mine["image_type"], mine["type_source"], mine["fixed"], mine["fixed_by"]) == (
        "Dealer",
        "override",
        True,
        "test",
    )
    assert mine["fix_scope"] == "override" and mine["low_confidence"] is False
    assert mine["model_version"] == red["model_version"]
    assert mine["confidence"] == pytest.approx(red["confidence"])
    assert mine["url"] == server.url("/red.jpg") and mine["thumbnail_unavailable"] is None
    # The other advertiser does not see 42's override.
    theirs = client.get(
        "/v1/advertisers/dealer-77/images", params={"fixed": "true"}, headers=fixer_headers
    )
    assert theirs.json()["total"] == 0
    unfixed = client.get(
        "/v1/advertisers/dealer-42/images", params={"fixed": "false"}, headers=fixer_headers
    ).json()
    assert [i["image_key"] for i in unfixed["items"]] == [both["image_key"]]
    by_me = client.get(
        "/v1/advertisers/dealer-42/images", params={"fixed_by": "test"}, headers=fixer_headers
    ).json()
    assert [i["image_key"] for i in by_me["items"]] == [red["image_key"]]

    # The thumbnail is made once (downloaded again, then kept in the blob store).
    server.reset_counters()
    thumb = client.get(mine["thumbnail_url"], headers=fixer_headers)
    assert thumb.status_code == 200 and thumb.headers["content-type"] == "image/jpeg"
    assert thumb.content[:3] == b"\xff\xd8\xff" and len(thumb.content) < 20_000
    etag = thumb.headers["etag"]
    again = client.get(mine["thumbnail_url"], headers=fixer_headers)
    assert again.content == thumb.content
    cached = client.get(mine["thumbnail_url"], headers={**fixer_headers, "If-None-Match": etag})
    assert cached.status_code == 304
    assert server.requests_for("/red.jpg") == 1


def test_listing_filters_are_validated_and_pages_clamp(
    client: TestClient, db: Database, fixer_headers: dict[str, str]
) -> None:
    keys = [add_image(db, confidence=0.1 * (i + 1)).image_key for i in range(5)]
    with db.write() as session:
        advertiser_repo.record_advertiser_images(session, "dealer-42", dict.fromkeys(keys), NOW)
    url = "/v1/advertisers/dealer-42/images"
    for params, field in (
        ({"image_type": "dealer"}, "image_type"),
        ({"color": "red"}, "color"),
        ({"low_confidence": "maybe"}, "low_confidence"),
        ({"page": "0"}, "page"),
        ({"limit": "501"}, "limit"),
        ({"order": "random"}, "order"),
    ):
        bad = client.get(url, params=params, headers=fixer_headers)
        assert bad.status_code == 422, (params, bad.text)
        assert bad.json()["error"]["field"] == field
    bad_id = client.get("/v1/advertisers/dealer 42/images", headers=fixer_headers)
    assert bad_id.status_code == 422 and bad_id.json()["error"]["field"] == "advertiser_id"
    last = client.get(url, params={"page": 999, "limit": 2}, headers=fixer_headers).json()
    assert (last["page"], last["pages"], [i["image_key"] for i in last["items"]]) == (
        3,
        3,
        [keys[4]],  # least confident first: 0.5 is the last
    )
    unsure = client.get(url, params={"low_confidence": "true"}, headers=fixer_headers).json()
    assert [i["image_key"] for i in unsure["items"]] == keys[:5]  # all below 0.8
    assert client.get(url).status_code == 401


def test_an_image_behind_a_password_is_listed_without_a_thumbnail(
    client: TestClient, db: Database, fixer_headers: dict[str, str]
) -> None:
    image = add_image(db, url="https://alice:***@cdn.example/private.jpg")
    with db.write() as session:
        advertiser_repo.record_advertiser_images(
            session, "dealer-42", dict.fromkeys([image.image_key]), NOW
        )
    [item] = client.get("/v1/advertisers/dealer-42/images", headers=fixer_headers).json()["items"]
    assert (item["thumbnail_url"], item["thumbnail_unavailable"]) == (None, "url_password")
    assert item["url"] == "https://alice:***@cdn.example/private.jpg"
    thumb = client.get(f"/v1/images/{image.image_key}/thumbnail", headers=fixer_headers)
    assert thumb.status_code == 404 and "needed a password" in thumb.json()["error"]["message"]


def test_the_color_filter_is_the_vocabulary_and_none() -> None:
    assert get_args(ColorFilter) == (*COLORS, "none")


def test_the_adaptation_switch_per_advertiser(client: TestClient, db: Database) -> None:
    admin = make_headers(db, "admin")
    default = Settings.model_fields["advertiser_adaptation"].default
    on = client.put("/v1/advertisers/dealer-9", json={"adapt_answers": True}, headers=admin)
    assert on.status_code == 200, on.text
    body = on.json()
    assert (body["adapt_answers"], body["adapting"], body["reclassify_on_promote"]) == (
        True,
        True,
        False,
    )
    # A field left out keeps its value.
    both = client.put(
        "/v1/advertisers/dealer-9", json={"reclassify_on_promote": True}, headers=admin
    ).json()
    assert (both["adapt_answers"], both["reclassify_on_promote"]) == (True, True)
    off = client.put("/v1/advertisers/dealer-9", json={"adapt_answers": False}, headers=admin)
    assert (off.json()["adapt_answers"], off.json()["adapting"]) == (False, False)
    back = client.put("/v1/advertisers/dealer-9", json={"adapt_answers": None}, headers=admin)
    assert (back.json()["adapt_answers"], back.json()["adapting"]) == (None, default)
    assert back.json()["reclassify_on_promote"] is True
    answer = client.get("/v1/advertisers", headers=admin).json()
    listed = {a["advertiser_id"]: a for a in answer["items"]}
    assert listed["dealer-9"]["adapt_answers"] is None
    assert listed["dealer-9"]["adapting"] is default

    empty = client.put("/v1/advertisers/dealer-9", json={}, headers=admin)
    assert empty.status_code == 422 and "adapt_answers" in empty.text
    wrong = client.put("/v1/advertisers/dealer-9", json={"adapt_answers": "yes"}, headers=admin)
    assert wrong.status_code == 422 and wrong.json()["error"]["field"] == "adapt_answers"
    fixer = client.put(
        "/v1/advertisers/dealer-9", json={"adapt_answers": True}, headers=make_headers(db, "fixer")
    )
    assert fixer.status_code == 403


def test_an_advertiser_id_with_a_slash_is_reachable(
    client: TestClient, db: Database, fixer_headers: dict[str, str]
) -> None:
    # Ids may hold a slash (classify takes "group/dealer-7"); the routes that take one in
    # their path answered 404 for it, so such an advertiser could be listed, never opened.
    key = add_image(db).image_key
    with db.write() as session:
        advertiser_repo.record_advertiser_images(
            session, "group/dealer-7", dict.fromkeys([key]), NOW
        )
    listed = client.get("/v1/advertisers", headers=fixer_headers).json()["items"]
    assert "group/dealer-7" in [a["advertiser_id"] for a in listed]
    for path in (
        "/v1/advertisers/group%2Fdealer-7/images",
        "/v1/advertisers/group/dealer-7/images",
    ):
        page = client.get(path, headers=fixer_headers)
        assert page.status_code == 200, page.text
        assert page.json()["advertiser_id"] == "group/dealer-7"
        assert [i["image_key"] for i in page.json()["items"]] == [key]
    admin = make_headers(db, "admin")
    changed = client.put(
        "/v1/advertisers/group%2Fdealer-7", json={"adapt_answers": False}, headers=admin
    )
    assert changed.status_code == 200, changed.text
    assert changed.json()["advertiser_id"] == "group/dealer-7"
    assert changed.json()["adapt_answers"] is False
    # The id "images" (classify takes it): it 307-redirected to a trailing slash, then 422.
    key = add_image(db).image_key
    with db.write() as session:
        advertiser_repo.record_advertiser_images(session, "images", {key: None}, NOW)
    page = client.get("/v1/advertisers/images/images", headers=fixer_headers)
    assert page.status_code == 200, page.text
    assert (page.json()["advertiser_id"], len(page.json()["items"])) == ("images", 1)
    changed = client.put("/v1/advertisers/images", json={"adapt_answers": True}, headers=admin)
    assert changed.status_code == 200, changed.text
    assert changed.json()["advertiser_id"] == "images"
    bad_put = client.put("/v1/advertisers/a%20b", json={"adapt_answers": False}, headers=admin)
    bad_get = client.get("/v1/advertisers/a%20b/images", headers=fixer_headers)
    bad_body = client.post(
        "/v1/classify", json={"advertiser_id": "a b", "images": []}, headers=admin
    )
    for response in (bad_put, bad_get, bad_body):
        assert response.status_code == 422, response.text
        assert response.json()["error"]["field"] == "advertiser_id"
        # The rule in words, not the pattern's regular expression.
        assert "letters, digits or . _ : @ / -" in response.json()["error"]["message"]
        assert "(?:" not in response.json()["error"]["message"]


def _seed_advertisers(db: Database, ids: list[str]) -> None:
    key = add_image(db).image_key
    with db.write() as session:
        for advertiser in ids:
            advertiser_repo.record_advertiser_images(session, advertiser, {key: None}, NOW)


def test_the_advertisers_listing_pages_and_searches_by_id(client: TestClient, db: Database) -> None:
    # It answered every advertiser in one array (20,000: 3.6 MB); it pages as the
    # images listing does, and searches ids as the fix page's index does.
    ids = [f"dealer-{n:03d}" for n in range(250)] + ["Group/Dealer-7"]
    _seed_advertisers(db, ids)
    admin = make_headers(db, "admin")

    first = client.get("/v1/advertisers", headers=admin).json()
    assert {k: first[k] for k in ("total", "page", "pages", "limit", "q")} == {
        "total": 251,
        "page": 1,
        "pages": 3,
        "limit": 100,
        "q": "",
    }
    assert [a["advertiser_id"] for a in first["items"]] == sorted(ids)[:100]
    assert set(first["items"][0]) >= {"advertiser_id", "images", "overrides", "adapting"}

    walked: list[str] = []
    for page in (1, 2, 3, 4):  # 4 is past the end: the last page again
        answer = client.get(f"/v1/advertisers?page={page}&limit=120", headers=admin).json()
        assert answer["page"] == min(page, 3) and answer["pages"] == 3
        if page <= 3:
            walked += [a["advertiser_id"] for a in answer["items"]]
    assert walked == sorted(ids)

    found = client.get("/v1/advertisers?q=%20DEALER-7%20", headers=admin).json()
    assert [a["advertiser_id"] for a in found["items"]] == ["Group/Dealer-7"]
    assert (found["total"], found["pages"], found["q"]) == (1, 1, "DEALER-7")
    tens = client.get("/v1/advertisers?q=-01&limit=5&page=2", headers=admin).json()
    assert tens["total"] == 10 and [a["advertiser_id"] for a in tens["items"]] == [
        f"dealer-01{n}" for n in range(5, 10)
    ]
    none = client.get("/v1/advertisers?q=nobody", headers=admin).json()
    assert (none["total"], none["page"], none["pages"], none["items"]) == (0, 1, 1, [])


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("limit=0", "limit"),
        ("limit=501", "limit"),
        ("limit=ten", "limit"),
        ("page=0", "page"),
        ("page=1000001", "page"),
        ("q=" + "x" * 129, "q"),
        ("search=dealer", "search"),
        ("offset=100", "offset"),
    ],
)
def test_the_advertisers_listing_refuses_bad_paging_naming_the_parameter(
    client: TestClient, db: Database, query: str, field: str
) -> None:
    _seed_advertisers(db, ["dealer-1"])
    answer = client.get(f"/v1/advertisers?{query}", headers=make_headers(db, "admin"))
    assert answer.status_code == 422, answer.text
    assert answer.json()["error"]["field"] == field


def test_a_scoped_key_pages_and_searches_only_its_advertisers(
    client: TestClient, db: Database
) -> None:
    _seed_advertisers(db, ["dealer-1", "dealer-2", "dealer-3", "dealer-10"])
    with db.write() as session:
        _, key = apikeys.create_key(
            session, name="team", roles=["fixer"], now=NOW, advertisers=("dealer-1", "dealer-3")
        )
    scoped = {"Authorization": f"Bearer {key}"}
    every = client.get("/v1/advertisers?limit=1", headers=scoped).json()
    assert (every["total"], every["pages"]) == (2, 2)
    assert [a["advertiser_id"] for a in every["items"]] == ["dealer-1"]
    # dealer-10 and dealer-2 hold the search too, but are another advertiser's.
    searched = client.get("/v1/advertisers?q=dealer-", headers=scoped).json()
    assert [a["advertiser_id"] for a in searched["items"]] == ["dealer-1", "dealer-3"]
    assert client.get("/v1/advertisers?q=dealer-2", headers=scoped).json()["total"] == 0
