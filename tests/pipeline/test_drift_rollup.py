"""Novelty on the classify path: stored with each new image, carried by cached answers,
added to the daily rollup with the confidence (real photos, the bundled model)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np
import pytest

from cartag.clock import FakeClock
from cartag.models.classifier import Classifier
from cartag.net.fetch import Fetcher
from cartag.pipeline.classify import ClassifyService
from cartag.pipeline.results import ClassifyResult, ImageRequest
from cartag.settings import Settings
from cartag.store import embeddings as embedding_repo
from cartag.store.db import Database
from cartag.store.tables import ClassifyDailyRow, ImageRow
from tests.support.factories import NOW
from tests.support.http_server import ImageServer
from tests.support.images import placeholder_png, real_photos


def test_novelty_is_stored_cached_and_rolled_up(
    settings: Settings,
    sqlite_db: Database,
    server: ImageServer,
    classifier: Classifier,
    shared_data: Path,
) -> None:
    assert classifier.reference is not None, "the bundled model ships its drift reference"
    urls = []
    for i, path in enumerate(real_photos(shared_data, 6)):
        server.add_file(f"/{i}.jpg", path.read_bytes())
        urls.append(server.url(f"/{i}.jpg"))
    server.add_file("/ph.png", placeholder_png(), content_type="image/png")
    urls.append(server.url("/ph.png"))
    settings = settings.model_copy(update={"monitor_flush_s": 0})
    clock = FakeClock(NOW)

    async def run() -> list[list[ClassifyResult]]:
        async with Fetcher(settings) as fetcher:
            service = ClassifyService(settings, sqlite_db, fetcher, classifier, clock)
            try:
                first = await service.classify("a", [ImageRequest(u) for u in urls])
                clock.advance(3600)
                again = await service.classify("a", [ImageRequest(u) for u in urls])
                return [first, again]
            finally:
                service.close()

    first, again = asyncio.run(run())
    assert {r.status for r in first} == {"classified"}
    assert {r.status for r in again} == {"cached"}
    with sqlite_db.read() as session:
        rows = session.query(ImageRow).all()
        shas = [r.content_sha256 for r in rows if r.content_sha256]
        vectors = embedding_repo.load_embeddings(session, str(classifier.backbone_id), shas)
        daily = session.query(ClassifyDailyRow).all()
    novelty = {r.content_sha256: r.novelty for r in rows}
    assert all(n is not None and 0 <= n <= 1 for n in novelty.values())
    for sha, vector in vectors.items():  # the stored novelty is the embedding's (float16 kept)
        assert novelty[sha] == pytest.approx(
            float(classifier.reference.novelty(vector[None])[0]), abs=2e-3
        )
    assert [r.novelty for r in again] == [r.novelty for r in first]  # cached answers carry it
    # Both calls in the rollup: 14 answers, each with its confidence and novelty.
    threshold = classifier.reference.far_threshold
    values = np.array([r.novelty for r in first], dtype=np.float64)
    assert sum(r.count for r in daily) == 14
    assert sum(r.confidence_n for r in daily) == 14
    assert sum(r.novelty_n for r in daily) == 14
    assert sum(r.novelty_sum for r in daily) == pytest.approx(2 * values.sum())
    assert sum(r.far_n for r in daily) == 2 * int((values > threshold).sum())
    assert sum(r.confidence_sum for r in daily) == pytest.approx(
        2 * sum(r.confidence or 0 for r in first)
    )
