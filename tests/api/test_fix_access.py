"""Who may fix what: keys scoped to advertisers, the audit's user, strict fix values."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from cartag.store import advertisers as advertiser_repo
from cartag.store import apikeys
from cartag.store.db import Database
from cartag.store.tables import FixAuditRow
from tests.support.factories import NOW, add_image


def _key(db: Database, name: str, *roles: str, advertisers: tuple[str, ...] = ()) -> Any:
    with db.write() as session:
        row, key = apikeys.create_key(
            session, name=name, roles=list(roles), now=NOW, advertisers=advertisers
        )
        return row.id, {"Authorization": f"Bearer {key}"}


def _fix(client: TestClient, headers: dict[str, str], key: str, **body: Any) -> Any:
    return client.put(f"/v1/images/{key}/fix", json=body, headers=headers)


@pytest.fixture
def images(db: Database) -> dict[str, str]:
    """dealer-42's image ``mine``, dealer-77's ``theirs`` and a Placeholder of 42's."""
    # pHashes 32 bits apart: no fix of one applies to another.
    keys = {
        "mine": add_image(db, confidence=0.5, phash="f0f0f0f0f0f0f0f0").image_key,
        "theirs": add_image(db, phash="0f0f0f0f0f0f0f0f").image_key,
        "card": add_image(
            db, image_type="Placeholder", color=None, phash="ff00ff00ff00ff00"
        ).image_key,
    }
    with db.write() as session:
        advertiser_repo.record_advertiser_images(
            session, "dealer-42", dict.fromkeys([keys["mine"], keys["card"]]), NOW
        )
        advertiser_repo.record_advertiser_images(
            session, "dealer-77", dict.fromkeys([keys["theirs"]]), NOW
        )
    return keys


def test_a_scoped_key_fixes_and_sees_its_advertiser_only(
    client: TestClient, db: Database, images: dict[str, str]
) -> None:
    key_id, scoped = _key(db, "dealer-42 team", "fixer", "classifier", advertisers=("dealer-42",))
    _, staff = _key(db, "staff", "fixer")
    mine, theirs = images["mine"], images["theirs"]

    listed = client.get("/v1/advertisers", headers=scoped).json()["items"]
    assert [a["advertiser_id"] for a in listed] == ["dealer-42"]
    other = client.get("/v1/advertisers/dealer-77/images", headers=scoped)
    assert other.status_code == 403 and "scoped to dealer-42" in other.json()["error"]["message"]
    own = client.get("/v1/advertisers/dealer-42/images", headers=scoped).json()
    assert {i["image_key"] for i in own["items"]} == {mine, images["card"]}

    # Global fixes need an unscoped key; another advertiser's override is refused.
    denied = _fix(client, scoped, mine, advertiser_id="dealer-42", scope="global", color="Blue")
    assert denied.status_code == 403
    assert "global fixes" in denied.json()["error"]["message"]
    assert "unscoped" in denied.json()["error"]["message"]
    elsewhere = _fix(
        client, scoped, theirs, advertiser_id="dealer-77", scope="advertiser", color="Blue"
    )
    assert elsewhere.status_code == 403
    # Another advertiser's image does not exist for this key, whatever it says.
    hidden = _fix(
        client, scoped, theirs, advertiser_id="dealer-42", scope="advertiser", color="Blue"
    )
    assert hidden.status_code == 404
    for path in (f"/v1/images/{theirs}", f"/v1/images/{theirs}/history"):
        assert client.get(path, headers=scoped).status_code == 404, path
    assert client.get(f"/v1/images/{theirs}/thumbnail", headers=scoped).status_code == 404

    made = _fix(
        client,
        scoped,
        mine,
        advertiser_id="dealer-42",
        scope="advertiser",
        color="Blue",
        on_behalf_of="Dana at dealer-42",
    )
    assert made.status_code == 200, made.text
    assert made.json()["audit"]["user"] == "dealer-42 team"
    # Staff fix globally and for dealer-77; the scoped key's history hides 77's override
    # and whom the global fix was made for.
    assert _fix(
        client, staff, mine, advertiser_id="dealer-77", scope="global", color="Red"
    ).is_success
    assert _fix(
        client, staff, mine, advertiser_id="dealer-77", scope="advertiser", color="Grey"
    ).is_success
    history = client.get(f"/v1/images/{mine}/history", headers=scoped).json()["entries"]
    assert [(e["user"], e["scope"], e["advertiser_id"]) for e in history] == [
        ("dealer-42 team", "advertiser", "dealer-42"),
        ("staff", "global", ""),
    ]
    full = client.get(f"/v1/images/{mine}/history", headers=staff).json()["entries"]
    assert [e["advertiser_id"] for e in full] == ["dealer-42", "dealer-77", "dealer-77"]
    # A one-advertiser key's answer applies its own override without being told.
    answer = client.get(f"/v1/images/{mine}", headers=scoped).json()
    assert (answer["color"], answer["color_source"]) == ("Blue", "override")
    other_answer = client.get(
        f"/v1/images/{mine}", params={"advertiser_id": "dealer-77"}, headers=scoped
    )
    assert other_answer.status_code == 403

    with db.read() as session:
        audit = session.scalars(select(FixAuditRow).order_by(FixAuditRow.id)).all()
    assert [(a.user, a.key_id, a.on_behalf_of) for a in audit][0] == (
        "dealer-42 team",
        key_id,
        "Dana at dealer-42",
    )

    # Conflicts name every advertiser's labels; classify and jobs stay within the scope.
    conflicts = client.get("/v1/conflicts", headers=scoped)
    assert conflicts.status_code == 403 and "unscoped" in conflicts.json()["error"]["message"]
    body = {"advertiser_id": "dealer-77", "images": [{"url": "https://cdn.example/x.jpg"}]}
    assert client.post("/v1/classify", json=body, headers=scoped).status_code == 403
    assert client.post("/v1/jobs", json=body, headers=scoped).status_code == 403


def test_fix_values_are_strict(
    client: TestClient, db: Database, images: dict[str, str], fixer_headers: dict[str, str]
) -> None:
    mine = images["mine"]
    base = {"advertiser_id": "dealer-42", "scope": "advertiser"}
    cases: list[tuple[dict[str, Any], str, str]] = [
        ({"color": "red"}, "color", "did you mean 'Red'?"),
        ({"color": "Silver"}, "color", "did you mean 'Grey'?"),
        ({"color": "Teal"}, "color", "Black, Blue, Brown"),
        ({"image_type": "dealer"}, "image_type", "did you mean 'Dealer'?"),
        ({"image_type": "Placeholder", "color": "Red"}, "color", "Placeholder has no color"),
        ({"color": "Red", "user": "a", "on_behalf_of": "b"}, "user", "on_behalf_of only"),
    ]
    for change, field, message in cases:
        response = _fix(client, fixer_headers, mine, **base, **change)
        assert response.status_code == 422, (change, response.text)
        error = response.json()["error"]
        assert error["field"] == field and message in error["message"], (change, error)
    # The image is a Placeholder (the model says so): a color alone would never show.
    card = _fix(client, fixer_headers, images["card"], **base, color="Red")
    assert card.status_code == 422 and card.json()["error"]["field"] == "color"
    assert "Placeholder here (the model says so)" in card.json()["error"]["message"]
    both = _fix(client, fixer_headers, images["card"], **base, image_type="Dealer", color="Red")
    assert both.status_code == 200 and both.json()["result"]["color"] == "Red"
    with db.read() as session:
        assert len(session.scalars(select(FixAuditRow)).all()) == 1
