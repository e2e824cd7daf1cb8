"""Thumbnails of classified images: made once from the image's URL, then read from blobs."""

from __future__ import annotations

import asyncio
import hashlib
import io

import pytest
from PIL import Image

from cartag.errors import ConflictError, NotFoundError
from cartag.net.fetch import Fetcher
from cartag.pipeline.thumbnails import ThumbnailSource, thumbnail, unavailable_reason
from cartag.settings import Settings
from cartag.store.blobs import MemoryBlobStore
from tests.support.http_server import ImageServer
from tests.support.images import jpeg_bytes

LIMITS = {"max_pixels": 50_000_000, "max_decode_bytes": 256 * 1024 * 1024}


def _make(settings: Settings, source: ThumbnailSource, blobs: MemoryBlobStore) -> bytes:
    async def run() -> bytes:
        async with Fetcher(settings) as fetcher:
            return await thumbnail(source, fetcher, blobs, **LIMITS)

    return asyncio.run(run())


def test_made_once_then_read_from_the_blob_store(settings: Settings) -> None:
    photo = jpeg_bytes(width=1200, height=800, color=(30, 60, 200))
    blobs = MemoryBlobStore()
    with ImageServer() as server:
        server.add_file("/car.jpg", photo)
        source = ThumbnailSource(
            "v1:car", server.url("/car.jpg"), hashlib.sha256(photo).hexdigest()
        )
        first = _make(settings, source, blobs)
        again = _make(settings, source, blobs)
        assert server.requests_for("/car.jpg") == 1
    assert first == again and first[:3] == b"\xff\xd8\xff"
    assert len(blobs.blobs) == 1 and len(first) < len(photo) / 4

    size = Image.open(io.BytesIO(first)).size
    assert min(size) >= 128 and max(size) <= 256 and size[0] > size[1], size


def test_no_preview_without_the_password_or_the_same_bytes(settings: Settings) -> None:
    blobs = MemoryBlobStore()
    secret = ThumbnailSource("v1:s", "https://alice:***@cdn.example/a.jpg", None)
    assert unavailable_reason(secret) == "url_password"
    with pytest.raises(NotFoundError, match="needed a password"):
        _make(settings, secret, blobs)
    with ImageServer() as server:
        server.add_file("/changed.jpg", jpeg_bytes(color=(1, 2, 3)))
        server.add_status("/gone.jpg", 404)
        changed = ThumbnailSource("v1:c", server.url("/changed.jpg"), "0" * 64)
        with pytest.raises(ConflictError, match="now serves another image"):
            _make(settings, changed, blobs)
        gone = ThumbnailSource("v1:g", server.url("/gone.jpg"), None)
        with pytest.raises(NotFoundError, match="http_404"):
            _make(settings, gone, blobs)
    assert blobs.blobs == {}
