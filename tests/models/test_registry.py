"""The model registry: register + smoke check, promotion gates, rollback, the watcher."""

from __future__ import annotations

import asyncio
import shutil
import threading
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cartag.clock import FakeClock
from cartag.errors import ConflictError, ModelError, ModelUnloadableError, NotFoundError
from cartag.models import hotswap, registry
from cartag.models.batching import MicroBatcher
from cartag.models.classifier import (
    BUNDLED_DIR,
    Classifier,
    Prediction,
    make_prediction,
    read_config,
)
from cartag.net.fetch import Fetcher
from cartag.ops.metrics import PrometheusTelemetry
from cartag.pipeline.classify import ClassifyService
from cartag.settings import Settings
from cartag.store import registry as repo
from cartag.store.db import Database
from tests.support.models import make_model_dir, type_metrics

BUNDLED_VERSION = str(read_config(BUNDLED_DIR)["version"])
GOOD = {"Dealer": 0.95, "Stock": 0.9, "Placeholder": 0.99}


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def initial(
    sqlite_db: Database, settings: Settings, clock: FakeClock, classifier: Classifier
) -> str:
    """A registry holding the bundled model as production; returns its version."""
    row = registry.ensure_initial(sqlite_db, settings, clock=clock, reuse=classifier)
    assert row is not None
    return row.version


def _register(
    db: Database,
    settings: Settings,
    clock: FakeClock,
    classifier: Classifier,
    folder: Path,
    **kwargs: object,
) -> str:
    row = registry.register_model(
        db, settings, folder, created_by="test", clock=clock, reuse=classifier, **kwargs
    )
    return row.version


def test_smoke_check_passes_the_bundled_model(classifier: Classifier) -> None:
    registry.smoke_check(classifier)


def test_first_start_registers_the_bundled_model_as_production(
    sqlite_db: Database, settings: Settings, clock: FakeClock, initial: str
) -> None:
    assert initial == BUNDLED_VERSION
    assert registry.ensure_initial(sqlite_db, settings, clock=clock) is None  # only once
    with sqlite_db.read() as session:
        row = registry.get_alias(session, "production")
        assert row is not None and row.version == BUNDLED_VERSION
        assert row.status == "registered" and row.card["config"]["version"] == BUNDLED_VERSION
        [deployment] = registry.history(session, "production")
    assert deployment.reason == "initial" and deployment.ended_at is None
    folder = registry.production_model_dir(sqlite_db, settings)
    assert folder == settings.data_dir / "models" / BUNDLED_VERSION
    assert (folder / "config.json").is_file() and (folder / "type_head.npz").is_file()


def test_processes_starting_together_register_the_first_model_once(
    db: Database, settings: Settings, clock: FakeClock, classifier: Classifier
) -> None:
    # A server and its workers start at the same moment on an empty registry (the
    # Celery end-to-end test does): each registers the bundled model; none may fail.
    start = threading.Barrier(3)
    rows: list[str] = []
    errors: list[BaseException] = []

    def first_start() -> None:
        start.wait()
        try:
            registry.ensure_initial(db, settings, clock=clock, reuse=classifier)
            rows.append(str(registry.production_model_dir(db, settings)))
        except BaseException as exc:  # noqa: BLE001 - reported by the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=first_start) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert rows == [str(settings.data_dir / "models" / BUNDLED_VERSION)] * 3
    with db.read() as session:
        assert [r.version for r in registry.list_versions(session)] == [BUNDLED_VERSION]
        assert len(registry.history(session, "production")) == 1
    assert not list((settings.data_dir / "models").glob(".incoming-*"))


def test_register_copies_hashes_and_is_idempotent(
    sqlite_db: Database,
    settings: Settings,
    clock: FakeClock,
    classifier: Classifier,
    tmp_path: Path,
    initial: str,
) -> None:
    source = make_model_dir(tmp_path / "m2", "test-2")
    version = _register(
        sqlite_db, settings, clock, classifier, source, dataset_ref="cars@1", metrics={"a": {}}
    )
    assert version == "test-2"
    assert (settings.data_dir / "models" / "test-2" / "type_head.json").is_file()
    again = _register(sqlite_db, settings, clock, classifier, source)
    assert again == version
    with sqlite_db.read() as session:
        versions = [r.version for r in registry.list_versions(session)]
        row = repo.get_version(session, "test-2")
    assert sorted(versions) == sorted([initial, "test-2"])
    assert row.dataset_ref == "cars@1" and row.metrics == {"a": {}} and row.status == "registered"

    # The same version with other files is refused.
    other = make_model_dir(tmp_path / "m2b", "test-2", temperature_scale=1.3)
    with pytest.raises(ConflictError, match="different files"):
        _register(sqlite_db, settings, clock, classifier, other)


@pytest.mark.parametrize(
    ("broken", "reason"),
    [("truncated", "corrupt"), ("labels", "labels"), ("nan", "probabilities")],
)
def test_a_broken_model_is_refused_at_register(
    sqlite_db: Database,
    settings: Settings,
    clock: FakeClock,
    classifier: Classifier,
    tmp_path: Path,
    initial: str,
    broken: str,
    reason: str,
) -> None:
    source = make_model_dir(tmp_path / "bad", f"bad-{broken}", broken=broken)
    with pytest.raises(ModelError, match=reason):
        _register(sqlite_db, settings, clock, classifier, source)
    with sqlite_db.read() as session:
        row = repo.get_version(session, f"bad-{broken}")
    assert row.status == "refused" and reason in row.card["status_reason"]
    with pytest.raises(ConflictError, match="refused"):
        registry.promote(
            sqlite_db, settings, f"bad-{broken}", by="t", clock=clock, force=True, reuse=classifier
        )
    # A fixed model may take the refused version's place.
    fixed = make_model_dir(tmp_path / "fixed", f"bad-{broken}")
    assert _register(sqlite_db, settings, clock, classifier, fixed) == f"bad-{broken}"


def test_a_folder_without_a_version_is_refused(
    sqlite_db: Database, settings: Settings, clock: FakeClock, tmp_path: Path
) -> None:
    with pytest.raises(ModelError, match="does not exist"):
        registry.register_model(sqlite_db, settings, tmp_path / "nope", created_by="t", clock=clock)
    source = make_model_dir(tmp_path / "m", "has spaces")
    with pytest.raises(ModelError, match="needs a version"):
        registry.register_model(sqlite_db, settings, source, created_by="t", clock=clock)


def test_promotion_gates_and_force(
    sqlite_db: Database,
    settings: Settings,
    clock: FakeClock,
    classifier: Classifier,
    tmp_path: Path,
    initial: str,
) -> None:
    registry.record_metrics(sqlite_db, initial, type_metrics(GOOD))
    worse = {**GOOD, "Stock": 0.80}  # a 0.10 recall drop on Stock
    _register(
        sqlite_db,
        settings,
        clock,
        classifier,
        make_model_dir(tmp_path / "w", "worse"),
        metrics=type_metrics(worse),
    )
    with pytest.raises(registry.PromotionGatedError) as gated:
        registry.promote(sqlite_db, settings, "worse", by="alice", clock=clock, reuse=classifier)
    assert len(gated.value.failures) == 1 and "Stock" in gated.value.failures[0]
    assert gated.value.status_code == 409

    # No shared evaluation set: gated too, while production has metrics.
    _register(sqlite_db, settings, clock, classifier, make_model_dir(tmp_path / "u", "unevaluated"))
    with pytest.raises(registry.PromotionGatedError, match="no evaluation set in common"):
        registry.promote(
            sqlite_db, settings, "unevaluated", by="alice", clock=clock, reuse=classifier
        )

    better = {**GOOD, "Stock": 0.93}
    _register(
        sqlite_db,
        settings,
        clock,
        classifier,
        make_model_dir(tmp_path / "b", "better"),
        metrics=type_metrics(better),
    )
    clock.advance(60)
    deployment = registry.promote(
        sqlite_db, settings, "better", by="alice", clock=clock, reuse=classifier
    )
    assert (deployment.version, deployment.reason, deployment.by) == ("better", "promote", "alice")
    with pytest.raises(ConflictError, match="already serves"):
        registry.promote(sqlite_db, settings, "better", by="alice", clock=clock, reuse=classifier)

    clock.advance(60)
    forced = registry.promote(
        sqlite_db, settings, "worse", by="bob", clock=clock, force=True, reuse=classifier
    )
    assert forced.version == "worse"
    with sqlite_db.read() as session:
        rows = registry.history(session, "production")
    assert [(r.version, r.reason) for r in rows] == [
        (initial, "initial"),
        ("better", "promote"),
        ("worse", "promote"),
    ]
    assert rows[0].ended_at == rows[1].started_at and rows[-1].ended_at is None
    with pytest.raises(NotFoundError):
        registry.promote(sqlite_db, settings, "nope", by="bob", clock=clock, reuse=classifier)


def test_candidate_alias_and_record_metrics(
    sqlite_db: Database,
    settings: Settings,
    clock: FakeClock,
    classifier: Classifier,
    tmp_path: Path,
    initial: str,
) -> None:
    _register(sqlite_db, settings, clock, classifier, make_model_dir(tmp_path / "c", "cand"))
    registry.promote(
        sqlite_db, settings, "cand", by="t", clock=clock, alias="candidate", reuse=classifier
    )
    registry.record_metrics(sqlite_db, "cand", type_metrics(GOOD))
    registry.record_metrics(sqlite_db, "cand", {"other:test": {"color": {"accuracy": 0.5}}})
    with sqlite_db.read() as session:
        candidate = registry.get_alias(session, "candidate")
        production = registry.get_alias(session, "production")
    assert candidate is not None and candidate.version == "cand"
    assert set(candidate.metrics) == {"cars@1:test", "other:test"}
    assert production is not None and production.version == initial


def test_rollback_walks_back_through_the_promotions(
    sqlite_db: Database,
    settings: Settings,
    clock: FakeClock,
    classifier: Classifier,
    tmp_path: Path,
    initial: str,
) -> None:
    with pytest.raises(ConflictError, match="no earlier version"):
        registry.rollback(sqlite_db, settings, by="t", clock=clock)
    for name in ("b", "c"):
        _register(sqlite_db, settings, clock, classifier, make_model_dir(tmp_path / name, name))
        clock.advance(1)
        registry.promote(sqlite_db, settings, name, by="t", clock=clock, reuse=classifier)
    clock.advance(1)
    assert registry.rollback(sqlite_db, settings, by="t", clock=clock).version == "b"
    clock.advance(1)
    back = registry.rollback(sqlite_db, settings, by="t", clock=clock)
    assert (back.version, back.reason) == (initial, "rollback")
    with pytest.raises(ConflictError, match="no earlier version"):
        registry.rollback(sqlite_db, settings, by="t", clock=clock)


def test_watcher_swaps_to_a_promoted_model_and_refuses_a_broken_one(
    sqlite_db: Database,
    settings: Settings,
    clock: FakeClock,
    classifier: Classifier,
    tmp_path: Path,
    initial: str,
) -> None:
    async def scenario() -> None:
        fetcher = Fetcher(settings)
        service = ClassifyService(settings, sqlite_db, fetcher, classifier, clock)
        try:
            watcher = hotswap.ModelWatcher(sqlite_db, settings, service)
            watcher.prime()
            assert await watcher.check() is None  # nothing changed
            _register(sqlite_db, settings, clock, classifier, make_model_dir(tmp_path / "n", "new"))
            registry.promote(sqlite_db, settings, "new", by="t", clock=clock, reuse=classifier)
            assert await watcher.check() == "new"
            assert service.classifier.version == "new"
            # The heads are new, the backbone is shared with the model it replaced.
            assert service.classifier.backbone is classifier.backbone  # type: ignore[attr-defined]
            [prediction] = await service._batcher.predict(registry.smoke_images()[:1])
            assert prediction.model_version == "new"

            # Registered and promoted fine, then its files got damaged before this server
            # loaded it: refused at swap time.
            _register(sqlite_db, settings, clock, classifier, make_model_dir(tmp_path / "d", "dmg"))
            registry.promote(sqlite_db, settings, "dmg", by="t", clock=clock, reuse=classifier)
            npz = settings.data_dir / "models" / "dmg" / "type_head.npz"
            npz.write_bytes(npz.read_bytes()[:100])
            assert await watcher.check() is None
            assert service.classifier.version == "new"
            assert "dmg" in watcher.refused
            assert await watcher.check() is None  # not retried
            with sqlite_db.read() as session:
                row = repo.get_version(session, "dmg")
            assert row.status == "refused" and "changed" in row.card["status_reason"]
        finally:
            service.close()
            await fetcher.aclose()

    asyncio.run(scenario())


class _Gated(Classifier):
    """A model whose predict waits for a signal, to hold a batch open across a swap."""

    def __init__(self, version: str) -> None:
        self.version = version
        self.entered = threading.Event()
        self.release = threading.Event()

    def predict(self, images: Sequence[Image.Image]) -> list[Prediction]:
        self.entered.set()
        self.release.wait(10)
        return [make_prediction(np.array([0.6, 0.3, 0.1]), np.ones(12) / 12) for _ in images]


def test_a_swap_lets_the_running_batch_finish_with_the_old_model() -> None:
    old, new = _Gated("old"), _Gated("new")
    new.release.set()
    batcher = MicroBatcher(old, max_batch=1, max_delay_s=0)
    try:
        image = Image.new("RGB", (8, 8))
        running = batcher.submit([image])
        assert old.entered.wait(5)
        queued = batcher.submit([image])  # waits behind the running batch
        assert batcher.swap(new) is old
        old.release.set()
        assert [p.model_version for p in running.result(5)] == ["old"]
        assert [p.model_version for p in queued.result(5)] == ["new"]
    finally:
        batcher.close()


def test_promote_refuses_a_version_whose_files_broke_after_registration(
    sqlite_db: Database,
    settings: Settings,
    clock: FakeClock,
    classifier: Classifier,
    tmp_path: Path,
    initial: str,
) -> None:
    # Issue 13 item 13: promote used to check only the status, so servers were told to
    # switch to a model none of them could load.
    _register(sqlite_db, settings, clock, classifier, make_model_dir(tmp_path / "d", "dmg"))
    npz = settings.data_dir / "models" / "dmg" / "color_head.npz"
    npz.write_bytes(npz.read_bytes()[:200])
    for force in (False, True):
        with pytest.raises(ModelUnloadableError, match="changed since it was registered") as exc:
            registry.promote(
                sqlite_db, settings, "dmg", by="t", clock=clock, force=force, reuse=classifier
            )
        assert exc.value.status_code == 409 and exc.value.code == "model_unloadable"
    with sqlite_db.read() as session:
        assert repo.alias_version(session, "production") == initial
        assert len(registry.history(session, "production")) == 1
    # The folder is gone altogether: refused the same way.
    _register(sqlite_db, settings, clock, classifier, make_model_dir(tmp_path / "g", "gone"))
    shutil.rmtree(settings.data_dir / "models" / "gone")
    with pytest.raises(ModelUnloadableError, match="missing"):
        registry.promote(sqlite_db, settings, "gone", by="t", clock=clock, reuse=classifier)


def test_startup_serves_the_last_model_that_loaded_when_production_cannot_load(
    sqlite_db: Database,
    settings: Settings,
    clock: FakeClock,
    classifier: Classifier,
    tmp_path: Path,
    initial: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    settings = settings.model_copy(update={"engine": "torch"})
    _register(sqlite_db, settings, clock, classifier, make_model_dir(tmp_path / "p", "prod-2"))
    registry.promote(sqlite_db, settings, "prod-2", by="t", clock=clock, reuse=classifier)
    started = hotswap.startup_model(sqlite_db, settings, clock=clock)
    assert started.version == "prod-2"
    with sqlite_db.read() as session:
        assert repo.alias_version(session, repo.LAST_LOADED) == "prod-2"
        # Bookkeeping, not an alias: never listed with them.
        assert repo.aliases_by_version(session) == {"prod-2": ["production"]}

    # prod-3 passes the promotion's load check, then its files break before any
    # server loaded it: a restarted server serves prod-2, not the bundled model.
    _register(sqlite_db, settings, clock, classifier, make_model_dir(tmp_path / "q", "prod-3"))
    registry.promote(sqlite_db, settings, "prod-3", by="t", clock=clock, reuse=classifier)
    npz = settings.data_dir / "models" / "prod-3" / "color_head.npz"
    npz.write_bytes(npz.read_bytes()[:10])
    caplog.clear()
    fallback = hotswap.startup_model(sqlite_db, settings, clock=clock)
    assert fallback.version == "prod-2"
    assert (
        "serving prod-2, the last model that loaded as production, instead of production "
        "prod-3" in caplog.text
    )

    # It says so in /metrics: the watcher primed on this server reports the fallback.
    fetcher = Fetcher(settings)
    telemetry = PrometheusTelemetry()
    service = ClassifyService(settings, sqlite_db, fetcher, fallback, clock, telemetry=telemetry)
    try:
        hotswap.ModelWatcher(sqlite_db, settings, service).prime()
        exposition = telemetry.exposition()[0].decode()
        assert 'cartag_model_fallback{serving="prod-2",wanted="prod-3"} 1.0' in exposition
    finally:
        service.close()
        asyncio.run(fetcher.aclose())

    # Neither production nor the last model that loaded: the bundled one, as before.
    npz = settings.data_dir / "models" / "prod-2" / "color_head.npz"
    npz.write_bytes(npz.read_bytes()[:10])
    assert hotswap.startup_model(sqlite_db, settings, clock=clock).version == BUNDLED_VERSION


def test_the_fallback_metric_clears_when_production_serves_again(
    sqlite_db: Database,
    settings: Settings,
    clock: FakeClock,
    classifier: Classifier,
    tmp_path: Path,
    initial: str,
) -> None:
    async def scenario() -> None:
        fetcher = Fetcher(settings)
        telemetry = PrometheusTelemetry()
        service = ClassifyService(
            settings, sqlite_db, fetcher, classifier, clock, telemetry=telemetry
        )

        def fallback_series() -> list[str]:
            text = telemetry.exposition()[0].decode()
            return [line for line in text.splitlines() if line.startswith("cartag_model_fallback{")]

        try:
            watcher = hotswap.ModelWatcher(sqlite_db, settings, service)
            watcher.prime()
            assert fallback_series() == []
            _register(sqlite_db, settings, clock, classifier, make_model_dir(tmp_path / "d", "dmg"))
            registry.promote(sqlite_db, settings, "dmg", by="t", clock=clock, reuse=classifier)
            npz = settings.data_dir / "models" / "dmg" / "type_head.npz"
            npz.write_bytes(npz.read_bytes()[:100])
            assert await watcher.check() is None
            assert fallback_series() == [
                f'cartag_model_fallback{{serving="{initial}",wanted="dmg"}} 1.0'
            ]
            clock.advance(1)
            registry.rollback(sqlite_db, settings, by="t", clock=clock)
            assert await watcher.check() is None  # already serving it
            assert fallback_series() == []
            _register(sqlite_db, settings, clock, classifier, make_model_dir(tmp_path / "n", "new"))
            registry.promote(sqlite_db, settings, "new", by="t", clock=clock, reuse=classifier)
            assert await watcher.check() == "new"
            with sqlite_db.read() as session:
                assert repo.alias_version(session, repo.LAST_LOADED) == "new"
        finally:
            service.close()
            await fetcher.aclose()

    asyncio.run(scenario())
