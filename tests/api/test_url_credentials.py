"""POST /v1/classify with URL credentials: used for the download, never stored."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from cartag.settings import Settings
from cartag.store.db import Database
from cartag.store.tables import ImageRow, UrlRow
from tests.api.conftest import AppFactory, make_headers
from tests.support.http_server import ImageServer
from tests.support.images import jpeg_bytes

pytestmark = pytest.mark.slow


def test_the_password_of_an_image_url_is_never_stored(
    make_client: AppFactory, db: Database, server: ImageServer, settings: Settings
) -> None:
    # Within revalidate_after_s a known URL is answered without asking its server.
    client = make_client(db, settings=settings.model_copy(update={"revalidate_after_s": 3600}))
    headers = make_headers(db, "classifier")
    server.add_file("/private.jpg", jpeg_bytes(color=(30, 30, 200)))
    url = server.url("/private.jpg").replace("http://", "http://alice:pa55word@")
    body = {"advertiser_id": "a", "images": [{"url": url}]}

    first = client.post("/v1/classify", json=body, headers=headers)
    assert first.status_code == 200, first.text
    (result,) = first.json()["results"]
    # The answer echoes what the caller sent (it knows it); the store keeps no password.
    assert result["status"] == "classified" and result["url"] == url
    with db.read() as session:
        stored = list(session.scalars(select(UrlRow.url))) + list(
            session.scalars(select(ImageRow.url))
        )
    assert len(stored) == 2 and all("alice:***@" in s and "pa55word" not in s for s in stored)

    # Same URL again: found by its stored form, but revalidated with the server (which
    # alone can tell whether this password may see the image), never answered blind.
    again = client.post("/v1/classify", json=body, headers=headers).json()["results"][0]
    assert again["status"] == "cached" and again["image_key"] == result["image_key"]
    assert server.requests_for("/private.jpg") == 2
    wrong = url.replace("pa55word", "guess")
    client.post(
        "/v1/classify", json={"advertiser_id": "a", "images": [{"url": wrong}]}, headers=headers
    )
    assert server.requests_for("/private.jpg") == 3
