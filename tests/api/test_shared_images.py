"""Images are shared between advertisers: each sees the URL it named an image by.

Two advertisers' URLs serving the same bytes are one image, stored with the first URL
fetched. A key scoped to the second advertiser saw the first's URL (user name included)
in its listing and in the image's history.
"""

from __future__ import annotations

from fastapi.testclient import TestClient

from cartag.settings import Settings
from cartag.store import apikeys
from cartag.store.db import Database
from tests.api.conftest import AppFactory, make_headers
from tests.support.factories import NOW
from tests.support.fakes import FixedClassifier, OneImageFetcher

THEIRS = "https://alice:s3cret@cdn.example/private/x.jpg"
MINE = "https://img.dealer42.example/car.jpg"


def _scoped(db: Database, advertiser: str) -> dict[str, str]:
    with db.write() as session:
        _, key = apikeys.create_key(
            session, name=f"{advertiser} team", roles=["classifier"], now=NOW,
            advertisers=[advertiser],
        )  # fmt: skip
    return {"Authorization": f"Bearer {key}"}


def _classify(client: TestClient, headers: dict[str, str], advertiser: str, url: str) -> str:
    body = {"advertiser_id": advertiser, "images": [{"url": url}]}
    response = client.post("/v1/classify", json=body, headers=headers)
    assert response.status_code == 200, response.text
    key: str = response.json()["results"][0]["image_key"]
    return key


def test_a_scoped_key_sees_its_own_url_of_a_shared_image(
    make_client: AppFactory, db: Database, settings: Settings
) -> None:
    client = make_client(db, classifier=FixedClassifier(), fetcher=OneImageFetcher(settings))
    admin = make_headers(db, "admin")
    key = _classify(client, admin, "other", THEIRS)
    assert _classify(client, _scoped(db, "dealer-42"), "dealer-42", MINE) == key  # one image

    mine = _scoped(db, "dealer-42")
    listed = client.get("/v1/advertisers/dealer-42/images", headers=mine).json()
    assert [i["url"] for i in listed["items"]] == [MINE]
    history = client.get(f"/v1/images/{key}/history", headers=mine).json()
    assert history["url"] == MINE
    # The other advertiser, and an unscoped key, see the first URL (password redacted).
    listed = client.get("/v1/advertisers/other/images", headers=admin).json()
    assert [i["url"] for i in listed["items"]] == ["https://alice:***@cdn.example/private/x.jpg"]
    history = client.get(f"/v1/images/{key}/history", headers=admin).json()
    assert history["url"] == "https://alice:***@cdn.example/private/x.jpg"
