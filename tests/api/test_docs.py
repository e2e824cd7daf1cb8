"""/docs and / work without the internet: every asset comes from the package."""

from __future__ import annotations

import re

from fastapi.testclient import TestClient

from cartag.api.routes.docs import ASSETS_PATH


def test_docs_pages_load_their_assets_from_the_app(client: TestClient) -> None:
    assert client.get("/redoc").status_code == 404  # its bundle would fetch a logo from a CDN
    for path in ("/docs",):
        page = client.get(path)
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
        assert "cdn.jsdelivr" not in page.text and "fonts.googleapis" not in page.text
        urls = re.findall(r"""(?:src|href)=["']?([^"' >]+)""", page.text)
        urls += re.findall(r"""url: ?['"]([^'"]+)['"]""", page.text)
        local = [u for u in urls if u.startswith(ASSETS_PATH)]
        assert local, page.text
        # No absolute URL to another host: an offline browser would fail on it.
        assert not [u for u in urls if u.startswith(("http:", "https:", "//"))], urls
        for url in local:
            asset = client.get(url)
            assert asset.status_code == 200 and len(asset.content) > 1000, url
    assert "/openapi.json" in client.get("/docs").text


def test_landing_page_links_the_docs_and_pages(client: TestClient) -> None:
    page = client.get("/")
    assert page.status_code == 200
    links = set(re.findall(r'href="([^"]+)"', page.text))
    assert {"/docs", "/openapi.json", "/review", "/fix", "/monitor"} <= links
    # The page is for people: not in the API's schema.
    assert "/" not in client.get("/openapi.json").json()["paths"]
