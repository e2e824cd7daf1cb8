"""The review queues over HTTP: per label, undecided only, after an item, progress, the grid."""

from __future__ import annotations

import re
from typing import Any

import pytest
from fastapi.testclient import TestClient

from cartag.store import apikeys
from cartag.store.blobs import MemoryBlobStore
from cartag.store.db import Database
from tests.api.conftest import AppFactory
from tests.support.browser import log_in
from tests.support.factories import NOW
from tests.web.seed import seed_queues

pytestmark = pytest.mark.slow

Seeded = tuple[TestClient, str, dict[str, int], dict[str, str]]


@pytest.fixture
def seeded(make_client: AppFactory, db: Database) -> Seeded:
    blobs = MemoryBlobStore()
    ref, ids = seed_queues(db, blobs)
    with db.write() as session:
        _, key = apikeys.create_key(session, name="rita", roles=["reviewer"], now=NOW)
    return make_client(db, blobs=blobs), ref, ids, {"Authorization": f"Bearer {key}"}


def _names(seeded: Seeded, **params: Any) -> list[str]:
    client, ref, ids, headers = seeded
    names = {v: k for k, v in ids.items()}
    response = client.get(f"/v1/datasets/{ref}/review/items", params=params, headers=headers)
    assert response.status_code == 200, response.text
    return [names[item["id"]] for item in response.json()["items"]]


def _decide(seeded: Seeded, name: str, action: str, field: str, label: str | None = None) -> None:
    client, ref, ids, headers = seeded
    body = {"item_id": ids[name], "action": action, "field": field, "label": label}
    response = client.post(f"/v1/datasets/{ref}/review/decisions", json=body, headers=headers)
    assert response.status_code == 200, response.text


def test_queues_undecided_items_the_next_page_and_progress(seeded: Seeded) -> None:
    client, ref, ids, headers = seeded
    assert _names(seeded, queue="image_type") == [
        "stock",
        "typeclash",
        "placeholder",
        "calm",
        "unranked",
    ]
    assert _names(seeded, queue="color") == ["grey", "flagged", "white", "unranked"]
    _decide(seeded, "stock", "accept", "image_type")
    _decide(seeded, "typeclash", "relabel", "image_type", "Stock")
    undecided = {"queue": "image_type", "decided": "false", "limit": 3}
    assert _names(seeded, **undecided) == ["placeholder", "calm", "unranked"]
    assert _names(seeded, **undecided, after=ids["placeholder"]) == ["calm", "unranked"]
    assert _names(seeded, queue="image_type", decided="true") == ["stock", "typeclash"]

    body = client.get(
        f"/v1/datasets/{ref}/review/items",
        params={**undecided, "after": ids["calm"]},
        headers=headers,
    ).json()
    assert (body["offset"], body["page"], body["total"]) == (2, 1, 3)
    assert body["progress"] == {"queue": "image_type", "total": 5, "done": 2, "undecided": 3}
    progress = client.get(
        f"/v1/datasets/{ref}/review/progress", params={"queue": "color"}, headers=headers
    )
    assert progress.json() == {"queue": "color", "total": 4, "done": 0, "undecided": 4}
    whole = client.get(f"/v1/datasets/{ref}/review/progress", headers=headers).json()
    assert (whole["queue"], whole["done"], whole["total"]) == (None, 2, 8)


def test_a_flagged_item_names_who_said_what(seeded: Seeded) -> None:
    client, ref, ids, headers = seeded
    items = client.get(
        f"/v1/datasets/{ref}/review/items", params={"flagged": "true"}, headers=headers
    ).json()["items"]
    by_id = {item["id"]: item for item in items}
    flagged = by_id[ids["flagged"]]
    assert flagged["conflict_fields"] == ["color"]
    assert [(c["who"], c["color"]) for c in flagged["conflict"]] == [
        ("dealer-42", "Black"),
        ("dealer-77", "Grey"),
    ]
    assert by_id[ids["typeclash"]]["conflict_fields"] == ["image_type"]
    assert all(item["decided"] is False for item in items)


@pytest.mark.parametrize(
    ("params", "field"),
    [({"queue": "shape"}, "queue"), ({"decided": "maybe"}, "decided"), ({"after": 0}, "after")],
)
def test_bad_queue_parameters_are_422(seeded: Seeded, params: dict[str, Any], field: str) -> None:
    client, ref, _, headers = seeded
    response = client.get(f"/v1/datasets/{ref}/review/items", params=params, headers=headers)
    assert response.status_code == 422 and response.json()["error"]["field"] == field
    unknown = client.get(
        f"/v1/datasets/{ref}/review/items", params={"after": 10**9}, headers=headers
    )
    assert unknown.status_code == 404


def _cards(html: str, ids: dict[str, int]) -> list[str]:
    names = {v: k for k, v in ids.items()}
    return [names[int(i)] for i in re.findall(r'data-id="(\d+)"', html)]


def test_the_grid_resumes_clamps_and_pages(seeded: Seeded, db: Database) -> None:
    client, ref, ids, headers = seeded
    key = headers["Authorization"].removeprefix("Bearer ")
    assert log_in(client, "/review", key).status_code == 303
    first = client.get(f"/review/{ref}?limit=2")
    assert _cards(first.text, ids) == ["stock", "typeclash"]
    assert "0 / 5 reviewed" in first.text and "items 1–2 of 5" in first.text
    assert f'href="?limit=2&amp;after={ids["typeclash"]}"' in first.text
    assert 'id="prev-page"' not in first.text

    _decide(seeded, "stock", "accept", "image_type")
    _decide(seeded, "placeholder", "accept", "image_type")
    # Opened again: it resumes after the last decision; the skipped "typeclash" waits.
    resumed = client.get(f"/review/{ref}?limit=2")
    assert _cards(resumed.text, ids) == ["calm", "unranked"]
    assert "resumed after your last decision" in resumed.text
    assert "2 / 5 reviewed" in resumed.text and "items 2–3 of 3" in resumed.text
    assert f'data-focus="{ids["calm"]}"' in resumed.text
    assert 'href="?limit=2&amp;page=1"' in resumed.text  # previous: back to "typeclash"
    assert _cards(client.get(f"/review/{ref}?limit=2&page=1").text, ids) == ["typeclash", "calm"]

    clamped = client.get(f"/review/{ref}?page=999&limit=2")
    assert clamped.status_code == 200
    assert "page 999 is past the end: showing page 2" in clamped.text
    assert _cards(clamped.text, ids) == ["unranked"]
    everything = client.get(f"/review/{ref}?show=all&page=1")
    assert _cards(everything.text, ids) == ["stock", "typeclash", "placeholder", "calm", "unranked"]
    assert everything.text.count('data-decided="1"') == 2
    decided = client.get(f"/review/{ref}?show=decided&page=1")
    assert _cards(decided.text, ids) == ["stock", "placeholder"]

    colors = client.get(f"/review/{ref}?mode=color")
    assert _cards(colors.text, ids) == ["grey", "flagged", "white", "unranked"]
    assert "<b>dealer-42</b> said Black" in colors.text
    assert "<b>dealer-77</b> said Grey" in colors.text
    assert 'data-key="ce"' in colors.text  # Grey has a button as well as keys

    for name in ("typeclash", "calm", "unranked"):
        _decide(seeded, name, "accept", "image_type")
    done = client.get(f"/review/{ref}")
    assert "Nothing left to review in this queue: all 5 items are decided" in done.text
    index = client.get("/review")
    assert re.search(r"5 / 5 <progress", index.text) and re.search(r"0 / 4 <progress", index.text)
