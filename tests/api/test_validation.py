"""Malformed requests get 4xx JSON naming the field; never a traceback."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from cartag.models.classifier import Classifier, Prediction
from cartag.store.db import Database
from tests.api.conftest import AppFactory, make_headers
from tests.support.factories import add_image
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
        # Parts a browser resolves: /fix/a/../b is /fix/b, another advertiser's page.
        ({"advertiser_id": "..", "images": [{"url": "http://a/x"}]}, "advertiser_id"),
        ({"advertiser_id": "a/../b", "images": [{"url": "http://a/x"}]}, "advertiser_id"),
        ({"advertiser_id": "a//b", "images": [{"url": "http://a/x"}]}, "advertiser_id"),
        ({"advertiser_id": "/a", "images": [{"url": "http://a/x"}]}, "advertiser_id"),
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
    nope = client.get("/nope").json()["error"]
    assert nope["code"] == "not_found" and "/docs" in nope["message"]
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


# --- What a fuzzing of every route found (2026-12-07): each is a 4xx naming the field. ---


def test_a_json_syntax_error_names_the_body_not_an_offset(
    client: TestClient, classify_headers: dict[str, str]
) -> None:
    for content in (b"not json", b'{"advertiser_id": "d",}'):
        response = client.post(
            "/v1/classify",
            content=content,
            headers={**classify_headers, "Content-Type": "application/json"},
        )
        assert response.status_code == 422
        error = response.json()["error"]
        assert error["field"] == "body"
        assert "not valid JSON" in error["message"] and "at character" in error["message"]
        assert "Content-Type: application/json" in error["message"]


@pytest.mark.parametrize(
    "content",
    [b"\xff\xfe\x00", b"[" * 100_000, b'{"advertiser_id": ' + b"9" * 5000 + b"}"],
    ids=["not-utf8", "nested", "long-number"],
)
def test_an_unreadable_body_says_what_to_send(
    client: TestClient, classify_headers: dict[str, str], content: bytes
) -> None:
    response = client.post(
        "/v1/classify",
        content=content,
        headers={**classify_headers, "Content-Type": "application/json"},
    )
    assert response.status_code == 400
    error = response.json()["error"]
    assert (error["code"], error["field"]) == ("invalid_body", "body")
    assert "Content-Type: application/json" in error["message"]


def test_a_body_of_another_content_type_says_to_send_json(
    client: TestClient, classify_headers: dict[str, str]
) -> None:
    response = client.post(
        "/v1/classify",
        content=b'{"advertiser_id": "a", "images": [{"url": "http://a/x.jpg"}]}',
        headers={**classify_headers, "Content-Type": "text/plain"},
    )
    assert response.status_code == 422
    error = response.json()["error"]
    assert error["field"] == "body"
    assert "Content-Type: application/json" in error["message"]
    assert "text/plain" in error["message"]


def test_a_job_offset_past_the_largest_id_is_a_422(
    client: TestClient, classify_headers: dict[str, str]
) -> None:
    for offset in (2**53, 2**63, 10**20):
        response = client.get("/v1/jobs", params={"offset": offset}, headers=classify_headers)
        assert response.status_code == 422, response.text
        assert response.json()["error"]["field"] == "offset"
    assert (
        client.get("/v1/jobs", params={"offset": 2**53 - 1}, headers=classify_headers).json()[
            "jobs"
        ]
        == []
    )


@pytest.mark.parametrize("field", ["comment", "on_behalf_of", "user"])
def test_nul_in_a_fix_text_is_a_422_naming_it(
    client: TestClient, db: Database, fixer_headers: dict[str, str], field: str
) -> None:
    image = add_image(db)
    body = {"advertiser_id": "dealer-42", "scope": "advertiser", "color": "Red", field: "x\0y"}
    response = client.put(f"/v1/images/{image.image_key}/fix", json=body, headers=fixer_headers)
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["field"] == field and "NUL" in error["message"]
    body[field] = "xy"
    response = client.put(f"/v1/images/{image.image_key}/fix", json=body, headers=fixer_headers)
    assert response.status_code == 200, response.text


@pytest.mark.parametrize(
    ("path", "params", "field"),
    [
        ("/v1/images/x%00", {}, "path"),
        ("/v1/jobs/%00", {}, "path"),
        ("/v1/models/%00", {}, "path"),
        ("/v1/images/v1:abc", {"advertiser_id": "x\0"}, "advertiser_id"),
        ("/monitor", {"advertiser": "\0"}, "advertiser"),
        ("/v1/advertisers/a/images", {"fixed_by": "\0"}, "fixed_by"),
    ],
)
def test_nul_in_a_path_or_query_is_a_422_naming_it(
    client: TestClient, db: Database, path: str, params: dict[str, str], field: str
) -> None:
    headers = make_headers(db, "admin")
    response = client.get(path, params=params, headers=headers)
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert (error["code"], error["field"]) == ("invalid_input", field)
    assert "%00" in error["message"]


def test_advertiser_ids_in_queries_and_bodies_are_checked(client: TestClient, db: Database) -> None:
    headers = make_headers(db, "admin")
    image = add_image(db)
    for bad in ("a b", "%2F%2F", "x!"):
        response = client.get(
            f"/v1/images/{image.image_key}", params={"advertiser_id": bad}, headers=headers
        )
        assert response.status_code == 422 and response.json()["error"]["field"] == "advertiser_id"
    assert (
        client.get(f"/v1/images/{image.image_key}", params={"advertiser_id": ""}, headers=headers)
    ).status_code == 200
    response = client.get("/monitor", params={"advertiser": "a b"}, headers=headers)
    assert response.status_code == 422 and response.json()["error"]["field"] == "advertiser"
    response = client.post(
        "/v1/models/reclassify", json={"advertiser_id": "bad id!"}, headers=headers
    )
    assert response.status_code == 422, response.text
    assert response.json()["error"]["field"] == "advertiser_id"


def test_a_bool_or_null_setting_names_the_field_once(client: TestClient, db: Database) -> None:
    headers = make_headers(db, "admin")
    for body, field in (
        ({"reclassify_on_promote": "yes"}, "reclassify_on_promote"),
        ({"reclassify_on_promote": None}, "reclassify_on_promote"),
        ({"adapt_answers": "no"}, "adapt_answers"),
    ):
        response = client.put("/v1/advertisers/dealer-99", json=body, headers=headers)
        assert response.status_code == 422, response.text
        error = response.json()["error"]
        assert [p["field"] for p in error["problems"]] == [field]
        assert "true" in error["message"] and "false" in error["message"]


def test_a_query_parameter_the_route_does_not_take_is_refused(
    client: TestClient, classify_headers: dict[str, str]
) -> None:
    # GET /v1/jobs?stauts=done answered every job: the misspelt filter was ignored.
    response = client.get("/v1/jobs?stauts=done&limit=5", headers=classify_headers)
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["field"] == "stauts" and "limit" in error["message"]
    assert client.get("/v1/jobs?limit=5", headers=classify_headers).status_code == 200
    body = {"advertiser_id": "a", "images": []}
    response = client.post("/v1/classify?advertiser=a", json=body, headers=classify_headers)
    assert response.status_code == 422 and response.json()["error"]["field"] == "advertiser"
    assert "no query parameters" in response.json()["error"]["message"]


def test_every_invalid_input_answer_lists_its_problems(
    client: TestClient, classify_headers: dict[str, str]
) -> None:
    # A 422 the route raised (not FastAPI's validation) had no "problems", though the
    # schema documents them for every invalid_input answer.
    response = client.get("/v1/jobs?stauts=done", headers=classify_headers)
    error = response.json()["error"]
    assert error["problems"] == [{"field": "stauts", "message": error["message"]}]
