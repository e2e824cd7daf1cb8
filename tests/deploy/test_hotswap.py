"""Serving follows the registry: the start-up model, the watcher's swap, the fallback metric."""

from __future__ import annotations

import asyncio
import dataclasses
import shutil
import threading
from collections.abc import Sequence
from typing import Any

import numpy as np
import pytest
from onnxruntime.capi import onnxruntime_pybind11_state as ort_state
from PIL import Image

from cartag.deploy import hotswap, loadcheck
from cartag.deploy.loadcheck import smoke_images
from cartag.errors import ModelError
from cartag.models.batching import MicroBatcher
from cartag.models.classifier import (
    BUNDLED_DIR,
    Classifier,
    Prediction,
    make_prediction,
    read_config,
)
from cartag.store import model_versions as repo
from cartag.telemetry.prometheus import PrometheusTelemetry
from tests.support.registry import Scene, damage, register_and_promote, rollback, serving

BUNDLED_VERSION = str(read_config(BUNDLED_DIR)["version"])


def test_watcher_swaps_to_a_promoted_model_and_refuses_a_broken_one(scene: Scene) -> None:
    async def scenario() -> None:
        async with serving(scene) as service:
            watcher = hotswap.ModelWatcher(scene.db, scene.settings, service)
            watcher.prime()
            assert await watcher.check() is None  # nothing changed
            register_and_promote(scene, "new")
            assert await watcher.check() == "new"
            assert service.classifier.version == "new"
            # The heads are new, the backbone is shared with the model it replaced.
            assert service.classifier.backbone is scene.classifier.backbone  # type: ignore[attr-defined]
            [prediction] = await service._batcher.predict(smoke_images()[:1])
            assert prediction.model_version == "new"

            # Registered and promoted fine, then its files got damaged before this server
            # loaded it: refused at swap time.
            register_and_promote(scene, "dmg")
            damage(scene, "dmg")
            assert await watcher.check() is None
            assert service.classifier.version == "new"
            assert "dmg" in watcher.refused
            assert await watcher.check() is None  # not retried
            with scene.db.read() as session:
                row = repo.get_version(session, "dmg")
            assert row.status == "refused" and "changed" in row.card["status_reason"]

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


def test_startup_serves_the_last_model_that_loaded_when_production_cannot_load(
    scene: Scene, caplog: pytest.LogCaptureFixture
) -> None:
    scene = dataclasses.replace(
        scene, settings=scene.settings.model_copy(update={"engine": "torch"})
    )
    db, settings, clock = scene.db, scene.settings, scene.clock
    register_and_promote(scene, "prod-2")
    started = hotswap.startup_model(db, settings, clock=clock)
    assert started.version == "prod-2"
    with db.read() as session:
        assert repo.alias_version(session, repo.LAST_LOADED) == "prod-2"
        # Bookkeeping, not an alias: never listed with them.
        assert repo.aliases_by_version(session) == {"prod-2": ["production"]}

    # prod-3 passes the promotion's load check, then its files break before any
    # server loaded it: a restarted server serves prod-2, not the bundled model.
    register_and_promote(scene, "prod-3")
    damage(scene, "prod-3", "color_head.npz", keep=10)
    caplog.clear()
    fallback = hotswap.startup_model(db, settings, clock=clock)
    assert fallback.version == "prod-2"
    assert (
        "serving prod-2, the last model that loaded as production, instead of production "
        "prod-3" in caplog.text
    )

    # It says so in /metrics: the watcher primed on this server reports the fallback.
    async def primed() -> str:
        telemetry = PrometheusTelemetry()
        async with serving(scene, fallback, telemetry) as service:
            hotswap.ModelWatcher(db, settings, service).prime()
            return telemetry.exposition()[0].decode()

    exposition = asyncio.run(primed())
    assert 'cartag_model_fallback{serving="prod-2",wanted="prod-3"} 1.0' in exposition

    # Neither production nor the last model that loaded: the bundled one, as before.
    damage(scene, "prod-2", "color_head.npz", keep=10)
    assert hotswap.startup_model(db, settings, clock=clock).version == BUNDLED_VERSION


def test_the_fallback_metric_clears_when_production_serves_again(scene: Scene) -> None:
    async def scenario() -> None:
        telemetry = PrometheusTelemetry()

        def fallback_series() -> list[str]:
            text = telemetry.exposition()[0].decode()
            return [line for line in text.splitlines() if line.startswith("cartag_model_fallback{")]

        async with serving(scene, telemetry=telemetry) as service:
            watcher = hotswap.ModelWatcher(scene.db, scene.settings, service)
            watcher.prime()
            assert fallback_series() == []
            register_and_promote(scene, "dmg")
            damage(scene, "dmg")
            assert await watcher.check() is None
            assert fallback_series() == [
                f'cartag_model_fallback{{serving="{scene.initial}",wanted="dmg"}} 1.0'
            ]
            scene.clock.advance(1)
            rollback(scene)
            assert await watcher.check() is None  # already serving it
            assert fallback_series() == []
            register_and_promote(scene, "new")
            assert await watcher.check() == "new"
            with scene.db.read() as session:
                assert repo.alias_version(session, repo.LAST_LOADED) == "new"

    asyncio.run(scenario())


def _engine_torch(scene: Scene) -> Scene:
    return dataclasses.replace(
        scene, settings=scene.settings.model_copy(update={"engine": "torch"})
    )


def test_startup_falls_back_when_production_was_loaded_before_its_files_broke(
    scene: Scene, caplog: pytest.LogCaptureFixture
) -> None:
    scene = _engine_torch(scene)
    db, settings, clock = scene.db, scene.settings, scene.clock
    register_and_promote(scene, "prod-2")
    assert hotswap.startup_model(db, settings, clock=clock).version == "prod-2"
    register_and_promote(scene, "prod-3")
    # Loaded fine as production, so recorded as the last model that loaded, then its
    # files broke: the server used to fall back to the bundled model, not to prod-2.
    assert hotswap.startup_model(db, settings, clock=clock).version == "prod-3"
    damage(scene, "prod-3", "color_head.npz", keep=10)
    caplog.clear()
    assert hotswap.startup_model(db, settings, clock=clock).version == "prod-2"
    assert (
        "serving prod-2, the production model before it, instead of production prod-3"
        in caplog.text
    )
    assert "changed since it was registered" in str(hotswap.load_problem(settings, "prod-3"))


def test_an_unreadable_production_folder_never_stops_a_server(scene: Scene) -> None:
    scene = _engine_torch(scene)
    db, settings, clock = scene.db, scene.settings, scene.clock
    register_and_promote(scene, "prod-2")
    head = settings.data_dir / "models" / "prod-2" / "type_head.npz"
    head.unlink()
    # An I/O error (root reads through chmod; /proc/self/mem at offset 0 does not read):
    # it escaped load_production as an OSError and stopped the server.
    head.symlink_to("/proc/self/mem")
    assert hotswap.load_production(db, settings, clock=clock) is None
    assert hotswap.startup_model(db, settings, clock=clock).version == scene.initial
    assert "Input/output error" in str(hotswap.load_problem(settings, "prod-2"))

    # A folder replaced by a file: the same.
    shutil.rmtree(head.parent)
    head.parent.write_text("not a model")
    assert hotswap.startup_model(db, settings, clock=clock).version == scene.initial
    assert "is not a folder" in str(hotswap.load_problem(settings, "prod-2"))


def test_the_watcher_says_why_production_is_not_served(scene: Scene) -> None:
    async def scenario() -> None:
        async with serving(scene) as service:
            watcher = hotswap.ModelWatcher(scene.db, scene.settings, service)
            watcher.prime()
            assert (watcher.wanted, watcher.fallback, watcher.fallback_reason) == (
                scene.initial,
                False,
                None,
            )
            register_and_promote(scene, "dmg")
            damage(scene, "dmg")
            assert await watcher.check() is None
            assert watcher.wanted == "dmg" and watcher.fallback
            reason = str(watcher.fallback_reason)
            assert reason.startswith("production model dmg cannot serve here: the files of")
            assert "\n" not in reason
            # A fixed model promoted later is swapped in: the fallback ends.
            register_and_promote(scene, "fixed")
            assert await watcher.check() == "fixed"
            assert (watcher.wanted, watcher.fallback, watcher.fallback_reason) == (
                "fixed",
                False,
                None,
            )

    asyncio.run(scenario())


def test_a_failure_of_this_host_is_retried_with_backoff_not_refused_for_the_fleet(
    scene: Scene, caplog: pytest.LogCaptureFixture
) -> None:
    # A disk read error on one server marked the version refused for every server: it
    # could never be promoted again, though its files were fine.
    async def scenario() -> None:
        async with serving(scene) as service:
            watcher = hotswap.ModelWatcher(scene.db, scene.settings, service, clock=scene.clock)
            watcher.prime()
            register_and_promote(scene, "flaky")
            head = scene.settings.data_dir / "models" / "flaky" / "type_head.npz"
            saved = head.read_bytes()
            head.unlink()
            head.symlink_to("/proc/self/mem")  # reads fail: Input/output error (EIO)

            assert await watcher.check() is None
            assert "flaky" not in watcher.refused and service.classifier.version == scene.initial
            with scene.db.read() as session:
                assert repo.get_version(session, "flaky").status == "registered"
            reason = str(watcher.fallback_reason)
            assert "Input/output error" in reason and "a failure of this host" in reason
            assert "could not load on this host (try 1)" in caplog.text
            assert "trying again in 5 s" in caplog.text

            # Not tried again before the delay; then again, the next delay twice as long.
            scene.clock.advance(4)
            assert await watcher.check() is None
            assert "(try 2)" not in caplog.text
            scene.clock.advance(1)
            assert await watcher.check() is None
            assert "(try 2)" in caplog.text and "trying again in 10 s" in caplog.text

            head.unlink()
            head.write_bytes(saved)  # the disk is back
            scene.clock.advance(9)
            assert await watcher.check() is None
            scene.clock.advance(1)
            assert await watcher.check() == "flaky"
            assert not watcher.fallback and watcher.retry is None

    asyncio.run(scenario())


def test_out_of_memory_while_loading_is_this_hosts_failure(
    scene: Scene, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def scenario() -> None:
        async with serving(scene) as service:
            watcher = hotswap.ModelWatcher(scene.db, scene.settings, service, clock=scene.clock)
            watcher.prime()
            register_and_promote(scene, "big")
            real = loadcheck.from_settings

            def oom(*args: object, **kwargs: object) -> Classifier:
                raise MemoryError

            monkeypatch.setattr(loadcheck, "from_settings", oom)
            assert await watcher.check() is None
            assert "big" not in watcher.refused
            with scene.db.read() as session:
                assert repo.get_version(session, "big").status == "registered"
            monkeypatch.setattr(loadcheck, "from_settings", real)
            scene.clock.advance(5)
            assert await watcher.check() == "big"

    asyncio.run(scenario())


def test_the_watcher_reads_the_registry_off_the_event_loop(
    scene: Scene, monkeypatch: pytest.MonkeyPatch
) -> None:
    # check() read the promoted version's row on the event loop: a slow database
    # stalled every request of the server meanwhile.
    threads: list[int] = []
    find = repo.find_version

    def recorded(*args: Any, **kwargs: Any) -> Any:
        threads.append(threading.get_ident())
        return find(*args, **kwargs)

    async def scenario() -> None:
        async with serving(scene) as service:
            watcher = hotswap.ModelWatcher(scene.db, scene.settings, service)
            watcher.prime()
            register_and_promote(scene, "new")
            monkeypatch.setattr(repo, "find_version", recorded)
            assert await watcher.check() == "new"
            assert threads and threading.get_ident() not in threads

    asyncio.run(scenario())


def _host_failures(telemetry: PrometheusTelemetry) -> list[str]:
    text = telemetry.exposition()[0].decode()
    return [line for line in text.splitlines() if line.startswith("cartag_model_host_load_")]


@pytest.mark.parametrize(
    ("raised", "local"),
    [
        (ort_state.RuntimeException, True),
        (ort_state.Fail, True),
        (ort_state.InvalidProtobuf, False),
    ],
)
def test_onnx_runtime_running_out_of_memory_is_this_hosts_failure(
    scene: Scene, monkeypatch: pytest.MonkeyPatch, raised: type[Exception], local: bool
) -> None:
    # ONNX Runtime's out-of-memory errors are not MemoryError: a server short of memory
    # refused the version for the whole fleet.
    messages = {
        ort_state.RuntimeException: "[ONNXRuntimeError] : 6 : RUNTIME_EXCEPTION : Non-zero "
        "status code returned while running Conv node. Status Message: bfc_arena.cc:376 "
        "onnxruntime::BFCArena::AllocateRawInternal Failed to allocate memory for "
        "requested buffer of size 643840",
        ort_state.Fail: "[ONNXRuntimeError] : 1 : FAIL : bad allocation",
        ort_state.InvalidProtobuf: "[ONNXRuntimeError] : 7 : INVALID_PROTOBUF : Load model "
        "failed: Protobuf parsing failed.",
    }

    async def scenario() -> None:
        telemetry = PrometheusTelemetry()
        async with serving(scene, telemetry=telemetry) as service:
            watcher = hotswap.ModelWatcher(scene.db, scene.settings, service, clock=scene.clock)
            watcher.prime()
            register_and_promote(scene, "big")
            real = loadcheck.from_settings

            def failing(*args: object, **kwargs: object) -> Classifier:
                raise raised(messages[raised])

            monkeypatch.setattr(loadcheck, "from_settings", failing)
            assert await watcher.check() is None
            with scene.db.read() as session:
                status = repo.get_version(session, "big").status
            if not local:  # the files' problem, as before: refused for every server
                assert "big" in watcher.refused and status == "refused"
                assert _host_failures(telemetry) == []
                return
            assert "big" not in watcher.refused and status == "registered"
            assert _host_failures(telemetry) == [
                'cartag_model_host_load_failures{version="big"} 1.0'
            ]
            monkeypatch.setattr(loadcheck, "from_settings", real)
            scene.clock.advance(5)
            assert await watcher.check() == "big"
            assert _host_failures(telemetry) == []

    asyncio.run(scenario())


def test_local_failure_reads_only_engine_errors_for_out_of_memory_words() -> None:
    assert not hotswap.local_failure(ModelError("the model crashed on the smoke-check images"))
    wrapped = ModelError("cannot load")
    wrapped.__cause__ = RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried")
    assert hotswap.local_failure(wrapped)
    quoted = ModelError("cannot load")
    quoted.__cause__ = ValueError("head says: failed to allocate memory")  # not an engine's
    assert not hotswap.local_failure(quoted)
    assert not hotswap.local_failure(ModelError("Failed to allocate memory, says the message"))


def test_a_model_folder_missing_on_this_host_is_retried_and_one_replaced_is_refused(
    scene: Scene, caplog: pytest.LogCaptureFixture
) -> None:
    # A folder missing here (a host's lost mount) refused the version for every server,
    # though the registry holds it, hashed at registration, and other hosts read it.
    async def scenario() -> None:
        telemetry = PrometheusTelemetry()
        async with serving(scene, telemetry=telemetry) as service:
            watcher = hotswap.ModelWatcher(scene.db, scene.settings, service, clock=scene.clock)
            watcher.prime()
            register_and_promote(scene, "mounted")
            folder = scene.settings.data_dir / "models" / "mounted"
            away = scene.settings.data_dir / "elsewhere"
            folder.rename(away)

            assert await watcher.check() is None
            assert "mounted" not in watcher.refused
            with scene.db.read() as session:
                assert repo.get_version(session, "mounted").status == "registered"
            reason = str(watcher.fallback_reason)
            assert "is missing on this host" in reason and "a failure of this host" in reason
            assert "could not load on this host (try 1)" in caplog.text
            scene.clock.advance(5)
            assert await watcher.check() is None
            assert _host_failures(telemetry) == [
                'cartag_model_host_load_failures{version="mounted"} 2.0'
            ]

            # A link into the lost mount is missing too.
            folder.symlink_to(scene.settings.data_dir / "lost-mount" / "mounted")
            scene.clock.advance(10)
            assert await watcher.check() is None and "mounted" not in watcher.refused
            folder.unlink()

            away.rename(folder)  # the mount is back
            scene.clock.advance(20)
            assert await watcher.check() == "mounted"
            assert _host_failures(telemetry) == []

            # Something else in the folder's place is a change to the model's files.
            register_and_promote(scene, "replaced")
            replaced = scene.settings.data_dir / "models" / "replaced"
            shutil.rmtree(replaced)
            replaced.write_text("not a model")
            assert await watcher.check() is None
            assert "replaced" in watcher.refused
            with scene.db.read() as session:
                assert repo.get_version(session, "replaced").status == "refused"

    asyncio.run(scenario())
