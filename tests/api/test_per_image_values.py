"""A bad value in one image is that image's result, never the batch's failure (issue 13).

An unparsable URL (``http://[::1/``), one that is not http(s), one over 2,048 characters:
that image is ``skipped`` with a reason and the others are classified, through
POST /v1/classify and through jobs alike. An unknown scrape color is ignored, as "N/A"
is, and the result says so in ``color_reason``.
"""

from __future__ import annotations

import json
import time
from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy import func, select

from cartag.settings import Settings
from cartag.store.db import Database
from cartag.store.tables import ImageRow, JobItemRow, UrlRow
from cartag.vocab import UNKNOWN_SCRAPE_COLOR
from tests.api.conftest import AppFactory, make_headers
from tests.support.fakes import FixedClassifier, OneImageFetcher

GOOD = "https://cdn.example/car.jpg"
LONG = "https://cdn.example/" + "a" * 2030 + ".jpg"  # 2,054 characters
BAD_URLS = {
    "http://[::1/": "invalid_url",
    "http://[127.0.0.1]/": "invalid_url",
    "ftp://cdn.example/car.jpg": "invalid_url",
    "file:///etc/passwd": "invalid_url",
    "data:image/png;base64,iVBORw0KGgo=": "invalid_url",
    "": "invalid_url",
    "no url at all": "invalid_url",
    "http://": "invalid_url",
    # PostgreSQL's text cannot hold a NUL: it reached the store and failed the batch.
    "https://cdn.example/\0.jpg": "invalid_url",
    "https://cdn.example/car.jpg?q=\0": "invalid_url",
    "https://cdn.example/\x01car.jpg": "invalid_url",
    # JSON's "\ud800" escape: a lone surrogate, no character, cannot be stored (was a 500).
    "https://cdn.example/\ud800.jpg": "invalid_url",
    LONG: "url_too_long",
}
# (scrape_color sent, the color answered, its source, color_reason); the model says Red.
COLORS: list[tuple[str | None, str, str, str | None]] = [
    ("Rouge", "Red", "model", UNKNOWN_SCRAPE_COLOR),
    ("🚗", "Red", "model", UNKNOWN_SCRAPE_COLOR),
    ("42", "Red", "model", UNKNOWN_SCRAPE_COLOR),
    ("an unknown colour name over sixteen characters", "Red", "model", UNKNOWN_SCRAPE_COLOR),
    ("N/A", "Red", "model", None),
    ("blue", "Blue", "scrape", None),
    (None, "Red", "model", None),
]


def _post(client: TestClient, path: str, body: dict[str, Any], headers: dict[str, str]) -> Any:
    """POST ``body`` as a JSON client would encode it: a lone surrogate as its ``\\u`` escape
    (httpx's ``json=`` cannot encode one)."""
    raw = json.dumps(body).encode("ascii")
    return client.post(path, content=raw, headers={**headers, "Content-Type": "application/json"})


def _client(make_client: AppFactory, db: Database, settings: Settings) -> TestClient:
    return make_client(db, classifier=FixedClassifier(), fetcher=OneImageFetcher(settings))


def _images() -> list[dict[str, Any]]:
    images: list[dict[str, Any]] = [{"url": url} for url in BAD_URLS]
    images.append({"url": GOOD})
    images += [{"url": f"{GOOD}?c={i}", "scrape_color": c} for i, (c, *_) in enumerate(COLORS)]
    return images


def _check(results: list[dict[str, Any]], images: list[dict[str, Any]]) -> None:
    # Echoed as sent, but a lone surrogate, which no UTF-8 answer can hold: U+FFFD.
    assert [r["url"] for r in results] == [i["url"].replace("\ud800", "\ufffd") for i in images]
    bad = [(r["status"], r["reason"]) for r in results[: len(BAD_URLS)]]
    assert bad == [("skipped", reason) for reason in BAD_URLS.values()]
    assert results[len(BAD_URLS)]["status"] in ("classified", "cached")
    answers = [
        (r["color"], r["color_source"], r["color_reason"]) for r in results[len(BAD_URLS) + 1 :]
    ]
    assert answers == [(color, source, reason) for _, color, source, reason in COLORS]


def _run_job(
    client: TestClient, headers: dict[str, str], images: list[dict[str, Any]]
) -> tuple[str, dict[str, Any]]:
    """Submit ``images`` as a job of advertiser ``a``; its id and the job once it ended."""
    response = _post(client, "/v1/jobs", {"advertiser_id": "a", "images": images}, headers)
    assert response.status_code == 202, response.text
    job_id: str = response.json()["id"]
    deadline = time.monotonic() + 60
    job: dict[str, Any] = client.get(f"/v1/jobs/{job_id}", headers=headers).json()
    while job["status"] not in ("done", "failed") and time.monotonic() < deadline:
        time.sleep(0.05)
        job = client.get(f"/v1/jobs/{job_id}", headers=headers).json()
    return job_id, job


def _stored_urls(db: Database) -> list[str]:
    with db.read() as session:
        return sorted(session.scalars(select(UrlRow.url)))


def test_classify_skips_bad_urls_and_ignores_unknown_colors(
    make_client: AppFactory, db: Database, settings: Settings
) -> None:
    fetcher = OneImageFetcher(settings)
    client = make_client(db, classifier=FixedClassifier(), fetcher=fetcher)
    images = _images()
    body = {"advertiser_id": "a", "images": images}
    response = _post(client, "/v1/classify", body, make_headers(db, "classifier"))
    assert response.status_code == 200, response.text
    body = response.json()
    _check(body["results"], images)
    assert body["counts"]["skipped"] == len(BAD_URLS)
    # The bad URLs reached neither the network nor the store.
    assert sorted(fetcher.fetched) == sorted(i["url"] for i in images[len(BAD_URLS) :])
    assert _stored_urls(db) == sorted(i["url"] for i in images[len(BAD_URLS) :])


def test_an_unparsable_url_next_to_a_good_one(
    make_client: AppFactory, db: Database, settings: Settings
) -> None:
    # The report: one such URL answered 500 for the whole batch.
    client = _client(make_client, db, settings)
    images = [{"url": "http://[::1/"}, {"url": GOOD}, {"url": "http://[127.0.0.1]/"}]
    response = client.post(
        "/v1/classify",
        json={"advertiser_id": "a", "images": images},
        headers=make_headers(db, "classifier"),
    )
    assert response.status_code == 200, response.text
    results = response.json()["results"]
    assert [(r["status"], r["reason"]) for r in results] == [
        ("skipped", "invalid_url"),
        ("classified", None),
        ("skipped", "invalid_url"),
    ]


def test_a_job_skips_bad_urls_and_ignores_unknown_colors(
    make_client: AppFactory, db: Database, settings: Settings
) -> None:
    # As a job, one unparsable URL marked the whole job failed; and an unknown color of
    # more than 16 characters does not fit job_items.scrape_color (PostgreSQL refuses it).
    client = _client(make_client, db, settings)
    headers = make_headers(db, "classifier")
    images = _images()
    job_id, job = _run_job(client, headers, images)
    assert job["status"] == "done", job
    _check(job["results"], images)
    with db.read() as session:
        stored = session.scalars(
            select(JobItemRow.scrape_color).where(JobItemRow.job_id == job_id)
        ).all()
        assert max(len(c) for c in stored if c is not None) <= 16
        # One image was classified once for all its URLs; the bad ones made no image.
        assert session.scalar(select(func.count()).select_from(ImageRow)) == 1


def test_a_job_of_only_unstorable_urls_is_done_without_classifying(
    make_client: AppFactory, db: Database, settings: Settings
) -> None:
    fetcher = OneImageFetcher(settings)
    client = make_client(db, classifier=FixedClassifier(), fetcher=fetcher)
    headers = make_headers(db, "classifier")
    images = [
        {"url": "https://cdn.example/\0a.jpg"},
        {"url": "https://cdn.example/b\0.jpg"},
        {"url": "https://cdn.example/c\ud800.jpg"},
    ]
    job_id, job = _run_job(client, headers, images)
    assert (job["status"], job["done"], job["total"]) == ("done", 3, 3), job
    assert [(r["url"], r["status"], r["reason"]) for r in job["results"]] == [
        (image["url"].replace("\ud800", "\ufffd"), "skipped", "invalid_url") for image in images
    ]
    assert fetcher.fetched == []
    with db.read() as session:
        stored = session.scalars(select(JobItemRow.url).where(JobItemRow.job_id == job_id))
        assert sorted(stored) == [
            "https://cdn.example/%00a.jpg",
            "https://cdn.example/b%00.jpg",
            "https://cdn.example/c%ED%A0%80.jpg",
        ]
