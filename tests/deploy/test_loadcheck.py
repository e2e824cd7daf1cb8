"""The load check: the smoke check on a loaded model, and a registered version's files."""

from __future__ import annotations

import pytest

from cartag.deploy.loadcheck import files_digest, load_registered, smoke_check, version_dir
from cartag.errors import ModelError
from cartag.models.classifier import Classifier
from cartag.store import model_versions as repo
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
