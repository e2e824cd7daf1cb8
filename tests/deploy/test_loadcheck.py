"""The load check: the smoke check on a loaded model, and a registered version's files."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from cartag.deploy.loadcheck import files_digest, load_registered, smoke_check, version_dir
from cartag.errors import ModelError
from cartag.models.classifier import Classifier
from cartag.store import model_versions as repo
from cartag.store.tables import ModelVersionRow
from tests.support.registry import Scene, damage, register


def test_smoke_check_passes_the_bundled_model(classifier: Classifier) -> None:
    smoke_check(classifier)


def test_load_registered_checks_the_hash_of_the_files(scene: Scene) -> None:
    register(scene, "v2")
    with scene.db.read() as session:
        row = repo.get_version(session, "v2")
    assert files_digest(version_dir(scene.settings, row)) == row.files_sha256
    model = load_registered(scene.settings, row, reuse=scene.classifier)
    assert model.version == "v2"
    damage(scene, "v2")
    with pytest.raises(ModelError, match="changed since it was registered"):
        load_registered(scene.settings, row, reuse=scene.classifier)


def _registered(scene: Scene, version: str) -> ModelVersionRow:
    register(scene, version)
    with scene.db.read() as session:
        return repo.get_version(session, version)


def test_an_unreadable_file_is_a_model_error_naming_it(scene: Scene) -> None:
    # Tests run as root, so chmod cannot deny a read; /proc/self/mem can't be read at
    # offset 0 (EIO): an I/O error as a failing disk gives one.
    row = _registered(scene, "v2")
    folder = version_dir(scene.settings, row)
    (folder / "type_head.npz").unlink()
    (folder / "type_head.npz").symlink_to("/proc/self/mem")
    with pytest.raises(ModelError, match=r"cannot read .*type_head\.npz .*Input/output error"):
        files_digest(folder)
    with pytest.raises(ModelError, match="register the model again under a new version"):
        load_registered(scene.settings, row, reuse=scene.classifier)


def test_a_model_folder_replaced_by_a_file_is_a_model_error(scene: Scene) -> None:
    row = _registered(scene, "v2")
    folder = version_dir(scene.settings, row)
    shutil.rmtree(folder)
    folder.write_text("not a model")
    with pytest.raises(ModelError, match=r"v2 is not a folder; restore it"):
        files_digest(folder)
    with pytest.raises(ModelError, match=r"model v2, .* is not a folder; restore it"):
        load_registered(scene.settings, row, reuse=scene.classifier)
    folder.unlink()
    with pytest.raises(ModelError, match=r"model v2, .* is missing"):
        load_registered(scene.settings, row, reuse=scene.classifier)


@pytest.mark.parametrize("damage_kind", ["directory", "dangling link"])
def test_a_head_replaced_by_a_directory_or_a_dangling_link_is_a_changed_model(
    scene: Scene, damage_kind: str
) -> None:
    row = _registered(scene, "v2")
    head = version_dir(scene.settings, row) / "color_head.npz"
    head.unlink()
    if damage_kind == "directory":
        head.mkdir()
    else:
        head.symlink_to(head.with_name("gone.npz"))
    with pytest.raises(ModelError, match="changed since it was registered"):
        load_registered(scene.settings, row, reuse=scene.classifier)


def test_a_file_name_that_is_not_utf8_is_hashed_as_its_bytes(tmp_path: Path) -> None:
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    before = files_digest(folder)
    (folder / os.fsdecode(b"notes-\xff.txt")).write_text("x")
    after = files_digest(folder)  # was a UnicodeEncodeError: a traceback at start-up
    assert after != before and files_digest(folder) == after
