"""A worker process follows the production alias between chunks, like a server."""

from __future__ import annotations

from pathlib import Path

import httpx

from cartag.clock import SystemClock
from cartag.deploy.promote import promote
from cartag.deploy.registry import register_model
from cartag.jobs.worker import WorkerContext
from cartag.models.classifier import Classifier
from cartag.settings import Settings
from cartag.store.db import Database
from tests.support.models import make_model_dir


def test_worker_swaps_to_a_promoted_model_between_chunks(
    settings: Settings, sqlite_db: Database, classifier: Classifier, tmp_path: Path
) -> None:
    settings.model_poll_s = 0  # check before every chunk
    ctx = WorkerContext(settings, sqlite_db, classifier=classifier)
    try:
        started = ctx.service.classifier.version
        ctx.follow_production()
        assert ctx.service.classifier.version == started  # nothing promoted yet

        folder = make_model_dir(tmp_path / "m2", "worker-test-2")
        row = register_model(
            sqlite_db, settings, folder, created_by="t", clock=SystemClock(), reuse=classifier
        )
        promote(sqlite_db, settings, row.version, by="t", clock=SystemClock(), force=True)
        ctx.follow_production()
        assert ctx.service.classifier.version == "worker-test-2"

        # A broken promotion is refused and the worker keeps its model.
        broken = make_model_dir(tmp_path / "m3", "worker-test-3")
        row3 = register_model(
            sqlite_db, settings, broken, created_by="t", clock=SystemClock(), reuse=classifier
        )
        promote(sqlite_db, settings, row3.version, by="t", clock=SystemClock(), force=True)
        for name in ("type_head.npz",):
            target = settings.data_dir / "models" / row3.version / name
            target.write_bytes(target.read_bytes()[:100])
        ctx.follow_production()
        assert ctx.service.classifier.version == "worker-test-2"
    finally:
        ctx.close()


def test_worker_serves_its_metrics(
    settings: Settings, sqlite_db: Database, classifier: Classifier
) -> None:
    ctx = WorkerContext(settings, sqlite_db, classifier=classifier)
    try:
        port = ctx.serve_metrics(0, host="127.0.0.1")
        text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
        info = f'backbone="{classifier.backbone_id}",version="{classifier.version}"'
        assert f"cartag_model_info{{{info}}} 1.0" in text
        assert "cartag_images_total" in text or "# TYPE cartag_images counter" in text
    finally:
        ctx.close()
