"""Registration: the first start, copies and hashes, refused broken models, idempotence."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import numpy as np
import pytest

from cartag.clock import FakeClock
from cartag.deploy import registry
from cartag.errors import ConflictError, InputError, ModelError
from cartag.models.classifier import BUNDLED_DIR, Classifier, read_config
from cartag.settings import Settings
from cartag.store import model_versions as repo
from cartag.store.db import Database
from tests.support.models import make_model_dir, type_metrics
from tests.support.registry import Scene, damage, model_dir, promote, register

BUNDLED_VERSION = str(read_config(BUNDLED_DIR)["version"])


def test_first_start_registers_the_bundled_model_as_production(scene: Scene) -> None:
    assert scene.initial == BUNDLED_VERSION
    assert registry.ensure_initial(scene.db, scene.settings, clock=scene.clock) is None  # once
    with scene.db.read() as session:
        row = repo.get_alias(session, "production")
        assert row is not None and row.version == BUNDLED_VERSION
        assert row.status == "registered" and row.card["config"]["version"] == BUNDLED_VERSION
        [deployment] = repo.history(session, "production")
    assert deployment.reason == "initial" and deployment.ended_at is None
    folder = registry.production_model_dir(scene.db, scene.settings)
    assert folder == scene.settings.data_dir / "models" / BUNDLED_VERSION
    assert (folder / "config.json").is_file() and (folder / "type_head.npz").is_file()


def test_processes_starting_together_register_the_first_model_once(
    db: Database, settings: Settings, classifier: Classifier
) -> None:
    # A server and its workers start at the same moment on an empty registry (the
    # Celery end-to-end test does): each registers the bundled model; none may fail.
    clock = FakeClock()
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
        assert [r.version for r in repo.list_versions(session)] == [BUNDLED_VERSION]
        assert len(repo.history(session, "production")) == 1
    assert not list((settings.data_dir / "models").glob(".incoming-*"))


def test_register_copies_hashes_and_is_idempotent(scene: Scene) -> None:
    source = model_dir(scene, "test-2")
    version = register(scene, "test-2", folder=source, dataset_ref="cars@1", metrics={"a": {}})
    assert version == "test-2"
    assert (scene.settings.data_dir / "models" / "test-2" / "type_head.json").is_file()
    assert register(scene, "test-2", folder=source) == version
    with scene.db.read() as session:
        versions = [r.version for r in repo.list_versions(session)]
        row = repo.get_version(session, "test-2")
    assert sorted(versions) == sorted([scene.initial, "test-2"])
    assert row.dataset_ref == "cars@1" and row.metrics == {"a": {}} and row.status == "registered"

    # The same version with other files is refused.
    other = model_dir(scene, "test-2", temperature_scale=1.3)
    with pytest.raises(ConflictError, match="different files"):
        register(scene, "test-2", folder=other)


@pytest.mark.parametrize(
    ("broken", "reason"),
    [("truncated", "corrupt"), ("labels", "labels"), ("nan", "probabilities")],
)
def test_a_broken_model_is_refused_at_register(scene: Scene, broken: str, reason: str) -> None:
    version = f"bad-{broken}"
    with pytest.raises(ModelError, match=reason):
        register(scene, version, folder=model_dir(scene, version, broken=broken))
    with scene.db.read() as session:
        row = repo.get_version(session, version)
    assert row.status == "refused" and reason in row.card["status_reason"]
    with pytest.raises(ConflictError, match="refused"):
        promote(scene, version, force=True)
    # A fixed model may take the refused version's place.
    assert register(scene, version) == version


def test_a_refusal_names_the_file_in_the_folder_given(scene: Scene) -> None:
    # The checks read the registry's copy; the file to fix is the one in the user's folder.
    folder = model_dir(scene, "cut", broken="truncated")
    with pytest.raises(ModelError) as refused:
        register(scene, "cut", folder=folder)
    assert str(folder / "type_head.npz") in refused.value.message
    assert str(scene.settings.data_dir / "models") not in refused.value.message


def test_a_head_holding_pickled_objects_is_refused_without_advice_to_unpickle(
    scene: Scene,
) -> None:
    folder = model_dir(scene, "pickled")
    npz = folder / "type_head.npz"
    with np.load(npz) as arrays:
        saved = {name: arrays[name] for name in arrays.files}
    first = next(iter(saved))
    saved[first] = np.array([{"code": "anything"}], dtype=object)
    np.savez(npz, **saved)  # object arrays are pickled
    with pytest.raises(ModelError) as refused:
        register(scene, "pickled", folder=folder)
    assert "holds Python objects" in refused.value.message
    assert "allow_pickle" not in refused.value.message


def test_a_folder_without_a_version_is_refused(
    sqlite_db: Database, settings: Settings, tmp_path: Path
) -> None:
    clock = FakeClock()
    with pytest.raises(ModelError, match="does not exist"):
        registry.register_model(sqlite_db, settings, tmp_path / "nope", created_by="t", clock=clock)
    source = make_model_dir(tmp_path / "m", "has spaces")
    with pytest.raises(ModelError, match="needs a version"):
        registry.register_model(sqlite_db, settings, source, created_by="t", clock=clock)


def test_a_model_missing_the_heads_of_the_other_precision_is_refused(scene: Scene) -> None:
    # The load check loads the heads of the precision this server serves; a folder without
    # the other precision's heads registered, then failed on a server set to serve it.
    folder = model_dir(scene, "half")
    config = json.loads((folder / "config.json").read_text())
    config["int8"] = {**config.get("int8", {}), "heads": {"image_type": "t8", "color": "c8"}}
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(ModelError, match="t8.json is missing"):
        register(scene, "half", folder=folder)
    with scene.db.read() as session:
        assert repo.get_version(session, "half").status == "refused"


def test_a_folder_with_a_dangling_link_registers_and_an_unreadable_file_is_refused(
    scene: Scene,
) -> None:
    # A dangling link is not a file of the model (the hash skips it): the copy did not
    # skip it and registration ended in a shutil.Error traceback.
    folder = model_dir(scene, "linked")
    (folder / "notes.txt").symlink_to(folder / "gone.txt")
    assert register(scene, "linked", folder=folder) == "linked"

    # A file that cannot be read (an I/O error: /proc/self/mem at offset 0) was an OSError.
    folder = model_dir(scene, "unreadable")
    (folder / "notes.txt").symlink_to("/proc/self/mem")
    with pytest.raises(ModelError, match=r"cannot read .*notes\.txt .*Input/output error"):
        register(scene, "unreadable", folder=folder)


def test_a_head_that_is_not_an_npz_file_is_called_so(scene: Scene) -> None:
    # numpy reads a file that is no zip as a pickle: it was called "holds Python objects".
    folder = model_dir(scene, "text")
    (folder / "type_head.npz").write_text("weights, as text\n")
    with pytest.raises(ModelError) as refused:
        register(scene, "text", folder=folder)
    assert "is not a NumPy .npz file" in refused.value.message


def test_the_production_folder_a_sweep_compares_with_is_checked_against_its_hash(
    scene: Scene,
) -> None:
    # A sweep scored its candidates against production's folder as it was on disk and
    # recorded the metrics under the registered version; a damaged head stopped it with
    # "rebuild the head from its training run", naming neither production nor a way out.
    folder = registry.production_model_dir(scene.db, scene.settings)
    assert folder == scene.settings.data_dir / "models" / scene.initial
    damage(scene, scene.initial, "color_head.npz", keep=300)
    with pytest.raises(ModelError) as exc:
        registry.production_model_dir(scene.db, scene.settings)
    message = exc.value.message
    assert f"cannot compare with the production model {scene.initial}" in message
    assert "changed since it was registered" in message and "cartag models rollback" in message


@pytest.mark.parametrize(
    ("figure", "value"),
    [("accuracy", 2), ("macro_recall", float("nan")), ("per_class.Stock.recall", 5)],
)
def test_the_registry_refuses_metrics_out_of_range_whoever_calls_it(
    scene: Scene, figure: str, value: float
) -> None:
    # Only the CLI's --metrics file was checked: a sweep storing its computed figures
    # through register_model / record_metrics stored an accuracy of 2 or a NaN.
    bad = type_metrics({"Dealer": 0.9, "Stock": 0.9})
    report = bad["cars@1:test"]["image_type"]
    *path, key = figure.split(".")
    for part in path:
        report = report[part]
    report[key] = value
    field = f"metrics.cars@1:test.image_type.{figure}"

    with pytest.raises(InputError) as refused:
        register(scene, "bad-metrics", metrics=bad)
    assert refused.value.field == field and "between 0 and 1" in refused.value.message
    with scene.db.read() as session:
        assert repo.find_version(session, "bad-metrics") is None  # nothing stored or copied
    assert not (scene.settings.data_dir / "models" / "bad-metrics").exists()

    register(scene, "good", metrics=type_metrics({"Dealer": 0.9, "Stock": 0.9}))
    with pytest.raises(InputError) as refused:
        registry.record_metrics(scene.db, "good", bad)
    assert refused.value.field == field and "metrics of good: " in refused.value.message
    with scene.db.read() as session:
        stored = repo.get_version(session, "good").metrics["cars@1:test"]["image_type"]
    assert stored["accuracy"] == 0.9 and stored["per_class"]["Stock"]["recall"] == 0.9
