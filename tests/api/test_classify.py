"""End to end: real images served over real HTTP, classified by the real model."""

from __future__ import annotations

import hashlib
import io
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from cartag.api.schemas.classify import ClassifyOut
from cartag.imaging.decode import decode_image
from cartag.imaging.keys import hamming, phash
from cartag.models.classifier import Classifier
from cartag.store.db import Database
from cartag.store.embeddings import load_embeddings
from cartag.store.images import get_images
from cartag.vocab import COLORS, IMAGE_TYPES
from tests.api.conftest import AppFactory, make_headers
from tests.support.http_server import ImageServer
from tests.support.images import jpeg_bytes, real_photos, truncated_jpeg_bytes

pytestmark = pytest.mark.slow


def _classify(
    client: TestClient,
    headers: dict[str, str],
    urls: list[str],
    advertiser: str = "adv-1",
    **extra: Any,
) -> dict[str, Any]:
    body = {"advertiser_id": advertiser, "images": [{"url": u} for u in urls], **extra}
    response = client.post("/v1/classify", json=body, headers=headers)
    assert response.status_code == 200, response.text
    answer: dict[str, Any] = response.json()
    # The route serialises the pipeline's dicts without pydantic (speed): every answer
    # must still be exactly the documented ClassifyOut, no field more or less.
    assert ClassifyOut.model_validate(answer).model_dump(mode="json") == answer
    return answer


def _serve_photos(server: ImageServer, shared_data: Path, n: int) -> list[str]:
    urls = []
    for i, path in enumerate(real_photos(shared_data, n)):
        server.add_file(f"/photos/{i}.jpg", path.read_bytes())
        urls.append(server.url(f"/photos/{i}.jpg"))
    return urls


def test_second_classify_is_answered_from_cache_with_304s(
    client: TestClient, classify_headers: dict[str, str], server: ImageServer, shared_data: Path
) -> None:
    urls = _serve_photos(server, shared_data, 12)
    first = _classify(client, classify_headers, urls)
    results = first["results"]
    assert [r["url"] for r in results] == urls
    assert first["counts"] == {"classified": 12}
    for r in results:
        assert r["image_type"] in IMAGE_TYPES
        assert r["color"] is None if r["image_type"] == "Placeholder" else r["color"] in COLORS
        assert r["source"] == "model" and r["model_version"] and r["image_key"].startswith("v1:")
    assert sum(r["image_type"] != "Placeholder" for r in results) >= 10

    server.reset_counters()
    second = _classify(client, classify_headers, urls)
    assert second["counts"] == {"cached": 12}
    assert server.bytes_sent == 0  # every image revalidated with a 304
    assert all(server.requests_for(f"/photos/{i}.jpg") == 1 for i in range(12))
    for before, after in zip(results, second["results"], strict=True):
        assert after["source"] == "cache"
        assert (after["image_key"], after["image_type"], after["color"]) == (
            before["image_key"],
            before["image_type"],
            before["color"],
        )
    conditional = server.requests("/photos/0.jpg")[0].headers
    assert "if-none-match" in conditional and "if-modified-since" in conditional


def test_changed_image_is_reclassified(
    client: TestClient, classify_headers: dict[str, str], server: ImageServer
) -> None:
    server.add_file("/car.jpg", jpeg_bytes(color=(200, 20, 20)))
    first = _classify(client, classify_headers, [server.url("/car.jpg")])["results"][0]
    server.add_file("/car.jpg", jpeg_bytes(color=(20, 20, 200)))
    second = _classify(client, classify_headers, [server.url("/car.jpg")])["results"][0]
    assert second["status"] == "classified"
    assert second["image_key"] != first["image_key"]


def test_bad_images_are_skipped_with_reasons_and_never_fail_the_batch(
    make_client: AppFactory, sqlite_db: Database, server: ImageServer, settings: Any
) -> None:
    client = make_client(
        sqlite_db, settings=settings.model_copy(update={"max_image_bytes": 50_000})
    )
    headers = make_headers(sqlite_db, "classifier")
    server.add_file("/ok.jpg", jpeg_bytes())
    server.add_file("/page.html", b"<html>not a photo</html>", content_type="text/html")
    server.add_file("/cut.jpg", truncated_jpeg_bytes())
    server.add_file("/huge.jpg", b"\xff" * 60_000)
    server.add_status("/gone.jpg", 404)
    urls = [
        server.url("/ok.jpg"),
        server.url("/gone.jpg"),
        server.url("/page.html"),
        server.url("/cut.jpg"),
        server.url("/huge.jpg"),
        "http://169.254.169.254/latest/meta-data/",
        "http://10.1.2.3/car.jpg",
    ]
    results = _classify(client, headers, urls)["results"]
    assert [(r["status"], r["reason"]) for r in results] == [
        ("classified", None),
        ("skipped", "http_404"),
        ("skipped", "not_an_image"),
        ("skipped", "truncated"),
        ("skipped", "too_large"),
        ("skipped", "blocked_address"),
        ("skipped", "blocked_address"),
    ]
    for r in results[1:]:
        assert r["image_type"] is None and r["color"] is None and r["image_key"] is None


def test_scrape_color_wins_over_the_model(
    client: TestClient, classify_headers: dict[str, str], server: ImageServer, shared_data: Path
) -> None:
    (url,) = _serve_photos(server, shared_data, 1)
    body = {"advertiser_id": "a", "images": [{"url": url, "scrape_color": "purple"}]}
    result = client.post("/v1/classify", json=body, headers=classify_headers).json()["results"][0]
    if result["image_type"] != "Placeholder":
        assert (result["color"], result["color_source"], result["source"]) == (
            "Purple",
            "scrape",
            "scrape",
        )


def test_same_bytes_under_a_new_url_reuse_the_answer(
    make_client: AppFactory, sqlite_db: Database, server: ImageServer, settings: Any
) -> None:
    client = make_client(
        sqlite_db, settings=settings.model_copy(update={"content_hash_hosts": ["127.0.0.1"]})
    )
    headers = make_headers(sqlite_db, "classifier")
    data = jpeg_bytes(color=(10, 120, 10))
    server.add_file("/a.jpg", data)
    server.add_file("/b.jpg", data)
    first = _classify(client, headers, [server.url("/a.jpg")])["results"][0]
    second = _classify(client, headers, [server.url("/b.jpg")])["results"][0]
    assert first["image_key"].startswith("sha256:")
    assert second["image_key"] == first["image_key"]
    assert second["status"] == "cached"


def test_images_without_validators_are_keyed_by_content(
    client: TestClient, classify_headers: dict[str, str], server: ImageServer
) -> None:
    server.add_file("/plain.jpg", jpeg_bytes(), etag=False, last_modified=False)
    server.add_file("/dup.jpg", jpeg_bytes(), etag=False, last_modified=False)
    results = _classify(
        client, classify_headers, [server.url("/plain.jpg"), server.url("/dup.jpg")]
    )["results"]
    assert results[0]["image_key"].startswith("sha256:")
    assert results[1]["image_key"] == results[0]["image_key"]
    again = _classify(client, classify_headers, [server.url("/plain.jpg")])["results"][0]
    assert again["status"] == "cached"


def test_duplicate_urls_in_one_request_are_fetched_once(
    client: TestClient, classify_headers: dict[str, str], server: ImageServer
) -> None:
    server.add_file("/x.jpg", jpeg_bytes())
    results = _classify(client, classify_headers, [server.url("/x.jpg")] * 3)["results"]
    assert len(results) == 3 and len({r["image_key"] for r in results}) == 1
    assert server.requests_for("/x.jpg") == 1


def _png_of(jpeg: bytes) -> bytes:
    out = io.BytesIO()
    Image.open(io.BytesIO(jpeg)).convert("RGB").save(out, "PNG")
    return out.getvalue()


def _reencoded(jpeg: bytes) -> bytes:
    image = Image.open(io.BytesIO(jpeg)).convert("RGB")
    out = io.BytesIO()
    image.resize((image.width * 3 // 4, image.height * 3 // 4)).save(out, "JPEG", quality=70)
    return out.getvalue()


def test_fix_survives_a_reupload_under_a_new_url(
    client: TestClient,
    classify_headers: dict[str, str],
    fixer_headers: dict[str, str],
    server: ImageServer,
    shared_data: Path,
) -> None:
    photo = real_photos(shared_data, 1, seed=3)[0].read_bytes()
    server.add_file("/old.jpg", photo)
    old = _classify(client, classify_headers, [server.url("/old.jpg")])["results"][0]
    response = client.put(
        f"/v1/images/{old['image_key']}/fix",
        json={
            "advertiser_id": "adv-1",
            "on_behalf_of": "alice",
            "scope": "global",
            "image_type": "Dealer",
            "color": "Orange",
        },
        headers=fixer_headers,
    )
    assert response.status_code == 200, response.text
    # Same pixels, different file format and URL: a different key, the same pHash.
    server.add_file("/new.png", _png_of(photo), content_type="image/png")
    # Re-encoded at another quality and size: a nearby pHash.
    server.add_file("/recoded.jpg", _reencoded(photo))
    for path in ("/new.png", "/recoded.jpg"):
        new = _classify(client, classify_headers, [server.url(path)])["results"][0]
        assert new["image_key"] != old["image_key"]
        assert (new["image_type"], new["color"], new["source"]) == ("Dealer", "Orange", "fix")


def test_embeddings_are_cached_by_content_and_backbone(
    client: TestClient,
    classify_headers: dict[str, str],
    server: ImageServer,
    shared_data: Path,
    db: Database,
    classifier: Classifier,
) -> None:
    paths = real_photos(shared_data, 3)  # the photos _serve_photos serves
    urls = _serve_photos(server, shared_data, 3)
    _classify(client, classify_headers, urls)
    shas = [hashlib.sha256(p.read_bytes()).hexdigest() for p in paths]
    assert classifier.backbone_id is not None
    with db.read() as session:
        stored = load_embeddings(session, classifier.backbone_id, shas)
    assert set(stored) == set(shas)
    images = [Image.open(p).convert("RGB") for p in paths]
    direct = classifier.predict(images)
    for sha, prediction in zip(shas, direct, strict=True):
        assert prediction.embedding is not None
        np.testing.assert_allclose(stored[sha], prediction.embedding, atol=0.02, rtol=0.01)


def test_the_phash_is_taken_of_the_model_view_of_a_listing_photo(
    client: TestClient,
    classify_headers: dict[str, str],
    server: ImageServer,
    shared_data: Path,
    db: Database,
    classifier: Classifier,
) -> None:
    photo = Image.open(real_photos(shared_data, 1, seed=8)[0]).convert("RGB")
    listing = io.BytesIO()
    photo.resize((1024, 768), Image.Resampling.LANCZOS).save(listing, "JPEG", quality=82)
    server.add_file("/listing.jpg", listing.getvalue())
    result = _classify(client, classify_headers, [server.url("/listing.jpg")])["results"][0]
    with db.read() as session:
        stored = get_images(session, [result["image_key"]])[result["image_key"]]
    decoded = decode_image(
        listing.getvalue(),
        max_pixels=10**8,
        max_decode_bytes=2**30,
        draft_size=classifier.draft_size(),
    ).image
    # Resized once for the model and hashed from that view: the hash of the decoded
    # photo to within a few bits, so fixes stored before still find their images.
    assert stored.phash == phash(classifier.prepare(decoded))
    assert hamming(stored.phash, phash(decoded)) <= 3
