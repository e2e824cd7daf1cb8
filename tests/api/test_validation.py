"""Malformed requests get 4xx JSON naming the field; never a traceback."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from cartag.models.classifier import Classifier, Prediction
from cartag.store.db import Database
from tests.api.conftest import AppFactory, make_headers
from tests.support.http_server import ImageServer
from tests.support.images import jpeg_bytes


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"images": [{"url": "http://a/x.jpg"}]}, "advertiser_id"),
        ({"advertiser_id": "a", "images": []}, "images"),
        # The shape is checked (a bad value in one image is that image's skip, see
        # test_per_image_values.py): a URL or color that is not a string is a 422.
        ({"advertiser_id": "a", "images": [{"url": 5}]}, "images.0.url"),
        ({"advertiser_id": "a", "images": [{"scrape_color": "Red"}]}, "images.0.url"),
        (
            {"advertiser_id": "a", "images": [{"url": "http://a/x", "scrape_color": 3}]},
            "images.0.scrape_color",
        ),
        (
            {"advertiser_id": "a", "images": [{"url": "http://a/x", "colour": "Red"}]},
            "images.0.colour",
        ),
        ({"advertiser_id": "a b", "images": [{"url": "http://a/x"}]}, "advertiser_id"),
        ({"advertiser_id": "a", "images": "http://a/x"}, "images"),
    ],
)
def test_bad_classify_bodies(
    client: TestClient, classify_headers: dict[str, str], body: object, field: str
) -> None:
    response = client.post("/v1/classify", json=body, headers=classify_headers)
    assert response.status_code == 422
    error = response.json()["error"]
    assert error["field"] == field
    assert "Traceback" not in response.text


def test_too_many_images(client: TestClient, classify_headers: dict[str, str]) -> None:
    body = {"advertiser_id": "a", "images": [{"url": f"http://a/{i}.jpg"} for i in range(1001)]}
    response = client.post("/v1/classify", json=body, headers=classify_headers)
    assert response.status_code == 422
    assert response.json()["error"]["field"] == "images"
    assert "POST /v1/jobs" in response.json()["error"]["message"]


def test_malformed_json(client: TestClient, classify_headers: dict[str, str]) -> None:
    response = client.post(
        "/v1/classify",
        content=b'{"advertiser_id": ',
        headers={**classify_headers, "Content-Type": "application/json"},
    )
    assert response.status_code == 422
    assert response.json()["error"]["code"] == "invalid_input"


def test_unknown_route_and_job(client: TestClient, classify_headers: dict[str, str]) -> None:
    assert client.get("/nope").json()["error"]["code"] == "http_error"
    response = client.get("/v1/jobs/123", headers=classify_headers)
    assert response.status_code == 404 and response.json()["error"]["code"] == "not_found"


class _BrokenClassifier(Classifier):
    """A classifier whose model crashes, to check what a client sees then."""

    version = "broken"

    def predict(self, images: object) -> list[Prediction]:
        raise RuntimeError("secret internal detail")


def test_internal_errors_hide_the_traceback(
    make_client: AppFactory, sqlite_db: Database, server: ImageServer
) -> None:
    client = make_client(sqlite_db, classifier=_BrokenClassifier())
    headers = make_headers(sqlite_db, "classifier")
    server.add_file("/a.jpg", jpeg_bytes())
    body = {"advertiser_id": "a", "images": [{"url": server.url("/a.jpg")}]}
    response = client.post("/v1/classify", json=body, headers=headers)
    assert response.status_code == 500
    assert response.json()["error"]["code"] == "internal_error"
    assert "secret" not in response.text and "Traceback" not in response.text
