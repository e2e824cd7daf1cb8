"""End to end: real photos classified through the API with a vendor's color API plugged in."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from cartag.api.app import create_app
from cartag.errors import ConfigError
from cartag.models.color_providers import (
    ColorAnswer,
    ColorProvider,
    ColorQuery,
    build_color_provider,
)
from cartag.settings import Settings
from cartag.store.db import Database
from cartag.vocab import IMAGE_TYPES
from tests.api.conftest import AppFactory
from tests.support.color_vendor import COLOR_PATH, CONFIDENCE_PATH, ColorVendor
from tests.support.http_server import ImageServer
from tests.support.images import placeholder_png, real_photos

pytestmark = pytest.mark.slow

# The vendor's labels, in its own dialect, and the cartag colors they must become.
VENDOR_LABELS = ("SILVER", "purple", "Anthracite", "orange")
EXPECTED = {"SILVER": "Grey", "purple": "Purple", "Anthracite": "Grey", "orange": "Orange"}


def _http_settings(settings: Settings, vendor_url: str) -> Settings:
    return settings.model_copy(
        update={
            "color_provider": "http",
            "color_http_url": vendor_url,
            "color_http_color_path": COLOR_PATH,
            "color_http_confidence_path": CONFIDENCE_PATH,
            "color_http_label_map": '{"anthracite": "Grey"}',
            "color_http_timeout_s": 2.0,
        }
    )


def _serve(server: ImageServer, shared_data: Path, n: int) -> list[str]:
    """``n`` real photos, then one "coming soon" placeholder card."""
    urls = []
    for i, path in enumerate(real_photos(shared_data, n)):
        server.add_file(f"/photos/{i}.jpg", path.read_bytes())
        urls.append(server.url(f"/photos/{i}.jpg"))
    server.add_file("/photos/soon.png", placeholder_png(), content_type="image/png")
    return [*urls, server.url("/photos/soon.png")]


def _classify(
    client: TestClient,
    headers: dict[str, str],
    urls: Sequence[str],
    scrape: dict[str, str] | None = None,
) -> list[dict[str, Any]]:
    images = [{"url": u, "scrape_color": (scrape or {}).get(u)} for u in urls]
    body = {"advertiser_id": "adv-1", "images": images}
    response = client.post("/v1/classify", json=body, headers=headers)
    assert response.status_code == 200, response.text
    results: list[dict[str, Any]] = response.json()["results"]
    return results


def _check_placeholders(results: list[dict[str, Any]]) -> None:
    for r in results:
        assert r["image_type"] in IMAGE_TYPES
        if r["image_type"] == "Placeholder":
            assert r["color"] is None and r["color_reason"] is None


def test_colors_come_from_the_vendor(
    make_client: AppFactory,
    db: Database,
    settings: Settings,
    classify_headers: dict[str, str],
    server: ImageServer,
    shared_data: Path,
) -> None:
    urls = _serve(server, shared_data, 8)
    vendor = ColorVendor(server)
    vendor.labels = {u: VENDOR_LABELS[i % len(VENDOR_LABELS)] for i, u in enumerate(urls)}
    http_settings = _http_settings(settings, vendor.url)
    client = make_client(
        db, settings=http_settings, color_provider=build_color_provider(http_settings)
    )

    results = _classify(client, classify_headers, urls)
    assert [r["status"] for r in results] == ["classified"] * len(urls)
    _check_placeholders(results)
    cars = [r for r in results if r["image_type"] != "Placeholder"]
    assert len(cars) >= 7
    for r in cars:
        assert r["color"] == EXPECTED[vendor.labels[r["url"]]], r
        assert r["color_source"] == "model" and r["color_reason"] is None
    # Only vehicles were sent to the vendor, each once.
    assert sorted(vendor.image_urls()) == sorted(r["url"] for r in cars)

    # Cached answers keep the vendor's colors without asking it again.
    again = _classify(client, classify_headers, urls)
    assert [r["status"] for r in again] == ["cached"] * len(urls)
    assert [r["color"] for r in again] == [r["color"] for r in results]
    assert len(vendor.requests()) == len(cars)


def test_vendor_down_still_classifies(
    make_client: AppFactory,
    db: Database,
    settings: Settings,
    classify_headers: dict[str, str],
    fixer_headers: dict[str, str],
    server: ImageServer,
    shared_data: Path,
) -> None:
    urls = _serve(server, shared_data, 6)
    with ImageServer() as gone:  # a vendor that was there once and is down now
        vendor_url = gone.url("/v1/color")
    client = make_client(db, settings=_http_settings(settings, vendor_url))

    results = _classify(client, classify_headers, urls, scrape={urls[0]: "Red"})
    assert [r["status"] for r in results] == ["classified"] * len(urls)
    _check_placeholders(results)
    cars = [r for r in results if r["image_type"] != "Placeholder"]
    assert len(cars) >= 5
    scraped = results[0]
    if scraped["image_type"] != "Placeholder":
        # The scraper's color still wins; it needs no reason.
        assert (scraped["color"], scraped["color_source"], scraped["color_reason"]) == (
            "Red",
            "scrape",
            None,
        )
    for r in cars:
        if r is scraped:
            continue
        assert r["color"] is None
        assert r["color_reason"] == "color_provider_connection_error"
        assert r["image_key"] and r["model_version"]

    # The reason is stored with the image: the cached answer still explains the null.
    unscraped = next(r for r in cars if r is not scraped)
    again = _classify(client, classify_headers, [unscraped["url"]])
    assert again[0]["status"] == "cached"
    assert again[0]["color_reason"] == "color_provider_connection_error"
    # A person's fix names the color: no reason any more.
    fixed = client.put(
        f"/v1/images/{unscraped['image_key']}/fix",
        headers=fixer_headers,
        json={
            "advertiser_id": "adv-1",
            "on_behalf_of": "alice",
            "scope": "global",
            "color": "Blue",
        },
    )
    assert fixed.status_code == 200, fixed.text
    assert (fixed.json()["result"]["color"], fixed.json()["result"]["color_reason"]) == (
        "Blue",
        None,
    )


class _Broken(ColorProvider):
    """A provider with a bug: it raises instead of answering."""

    name = "broken"

    async def colors(self, items: Sequence[ColorQuery]) -> list[ColorAnswer]:
        raise RuntimeError("boom")


def test_a_broken_provider_never_fails_the_batch(
    make_client: AppFactory,
    db: Database,
    classify_headers: dict[str, str],
    server: ImageServer,
    shared_data: Path,
) -> None:
    urls = _serve(server, shared_data, 3)
    client = make_client(db, color_provider=_Broken())
    results = _classify(client, classify_headers, urls)
    assert [r["status"] for r in results] == ["classified"] * len(urls)
    _check_placeholders(results)
    for r in results:
        if r["image_type"] != "Placeholder":
            assert r["color"] is None and r["color_reason"] == "color_provider_error"


def test_invalid_color_settings_fail_at_startup(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, color_provider="http")
    with pytest.raises(ConfigError, match="CARTAG_COLOR_HTTP_URL"):
        create_app(settings)
