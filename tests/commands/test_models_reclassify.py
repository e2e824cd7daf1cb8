"""``cartag models promote`` and ``rollback`` re-classify the opted-in advertisers alike."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from cartag.api.app import create_app
from cartag.cli import app
from cartag.models.classifier import BUNDLED_DIR, Classifier, read_config
from cartag.settings import Settings
from cartag.store import apikeys
from cartag.store import images as image_repo
from cartag.store.db import Database
from tests.support.factories import NOW
from tests.support.http_server import ImageServer
from tests.support.images import jpeg_bytes
from tests.support.models import make_model_dir

pytestmark = pytest.mark.slow

BUNDLED_VERSION = str(read_config(BUNDLED_DIR)["version"])
PHOTOS = {"a1": (200, 30, 30), "a2": (30, 30, 200), "b1": (30, 160, 40)}


@pytest.fixture
def server() -> Iterator[ImageServer]:
    with ImageServer() as srv:
        yield srv


def _classify(
    settings: Settings, db: Database, classifier: Classifier, server: ImageServer
) -> dict[str, str]:
    """Classify a1, a2 as advertiser A and b1 as B through the real app; their image keys."""
    with db.write() as session:
        _, key = apikeys.create_key(session, name="ops", roles=["admin"], now=NOW)
    headers = {"Authorization": f"Bearer {key}"}
    keys: dict[str, str] = {}
    api = create_app(settings, db=db, classifier=classifier, run_jobs=False)
    with TestClient(api) as client:
        for advertiser, names in (("A", ["a1", "a2"]), ("B", ["b1"])):
            for name in names:
                server.add_file(f"/{name}.jpg", jpeg_bytes(color=PHOTOS[name]))
            body = {
                "advertiser_id": advertiser,
                "images": [{"url": server.url(f"/{n}.jpg")} for n in names],
            }
            response = client.post("/v1/classify", json=body, headers=headers)
            assert response.status_code == 200, response.text
            for name, result in zip(names, response.json()["results"], strict=True):
                assert result["model_version"] == BUNDLED_VERSION
                keys[name] = result["image_key"]
    return keys


def _answers(db: Database, keys: dict[str, str]) -> dict[str, tuple[str | None, Any]]:
    with db.read() as session:
        rows = image_repo.get_images(session, list(keys.values()))
    return {name: (rows[key].model_version, rows[key].type_scores) for name, key in keys.items()}


def test_rollback_reclassifies_the_opted_in_advertisers_as_promote_does(
    settings: Settings, classifier: Classifier, server: ImageServer, tmp_path: Path
) -> None:
    env = {"CARTAG_DATA_DIR": str(settings.data_dir), "CARTAG_ENGINE": "torch"}
    runner = CliRunner()

    def cli(*args: str) -> str:
        result = runner.invoke(app, list(args), env=env)
        assert result.exit_code == 0, result.output
        return result.output

    cli("models", "list")  # migrates the store and registers the bundled model
    db = Database(settings.resolved_database_url)
    try:
        keys = _classify(settings, db, classifier, server)
        before = _answers(db, keys)
        cli("advertisers", "set", "A", "--reclassify-on-promote")
        cli("advertisers", "set", "B", "--reclassify-on-promote")
        cli(
            "models",
            "register",
            str(make_model_dir(tmp_path / "m", "cli-3", temperature_scale=2.0)),
        )

        promoted = cli("models", "promote", "cli-3", "--force")
        assert "re-classified with cli-3 for A, B: 3 images, 3 from cached embeddings" in promoted
        promoted_answers = _answers(db, keys)
        assert {name: version for name, (version, _) in promoted_answers.items()} == dict.fromkeys(
            PHOTOS, "cli-3"
        )
        assert promoted_answers["a1"][1] != before["a1"][1]  # the new head's scores

        # B opts out; the rollback re-classifies A only, exactly as a promotion would.
        cli("advertisers", "set", "B", "--no-reclassify-on-promote")
        rolled = cli("models", "rollback")
        assert f"production rolled back to {BUNDLED_VERSION}" in rolled
        assert f"re-classified with {BUNDLED_VERSION} for A: 2 images" in rolled
        after = _answers(db, keys)
        for name in ("a1", "a2"):
            version, scores = after[name]
            assert version == BUNDLED_VERSION
            assert scores == pytest.approx(before[name][1], abs=1e-4)  # the restored model's
        assert after["b1"] == promoted_answers["b1"]  # not opted in: untouched

        # Without re-classification both commands print the command that does it.
        promoted = cli("models", "promote", "cli-3", "--force", "--no-reclassify")
        assert promoted.strip().splitlines()[-1] == "cartag models reclassify"
        assert "keep the answers of the model before cli-3" in promoted
        rolled = cli("models", "rollback", "--no-reclassify")
        assert rolled.strip().splitlines()[-1] == "cartag models reclassify"
        assert _answers(db, keys) == after
    finally:
        db.dispose()


def test_ctrl_c_during_the_reclassification_of_a_promotion_says_how_to_finish_it(
    settings: Settings, classifier: Classifier, server: ImageServer, tmp_path: Path
) -> None:
    # Ctrl-C while `cartag models promote` re-classified ended it without a word (exit
    # 130): production had moved, and the images not reached kept the previous answers.
    env = {"CARTAG_DATA_DIR": str(settings.data_dir), "CARTAG_ENGINE": "torch"}
    assert CliRunner().invoke(app, ["models", "list"], env=env).exit_code == 0
    db = Database(settings.resolved_database_url)
    try:
        _classify(settings, db, classifier, server)
        with db.engine.begin() as conn:
            conn.exec_driver_sql("DELETE FROM embeddings")  # so the images are downloaded
    finally:
        db.dispose()
    for name, rgb in PHOTOS.items():
        server.add_slow(f"/{name}.jpg", 30, jpeg_bytes(color=rgb))
    server.reset_counters()
    runner = CliRunner()
    opted = runner.invoke(app, ["advertisers", "set", "A", "--reclassify-on-promote"], env=env)
    assert opted.exit_code == 0, opted.output
    folder = make_model_dir(tmp_path / "m", "cli-4", temperature_scale=2.0)
    assert runner.invoke(app, ["models", "register", str(folder)], env=env).exit_code == 0

    child = subprocess.Popen(
        [str(Path(sys.executable).with_name("cartag")), "models", "promote", "cli-4", "--force"],
        env={
            **os.environ,
            **env,
            "CARTAG_PRECISION": "fp32",
            "CARTAG_ALLOWED_NETWORKS": "127.0.0.0/8",
            "CARTAG_DOWNLOAD_DEADLINE_S": "120",
            "CARTAG_READ_TIMEOUT_S": "60",
            "COLUMNS": "250",
        },
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        # A shell's background job ignores SIGINT; a terminal's Ctrl-C does not.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),  # noqa: PLW1509
    )
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not server.requests_for("/a1.jpg"):
            assert child.poll() is None, child.communicate()[0]
            time.sleep(0.1)
        child.send_signal(signal.SIGINT)
        output, _ = child.communicate(timeout=60)
    finally:
        child.kill()
    assert child.returncode == 130, output
    assert "production -> cli-4" in output
    assert "interrupted: re-classification for A stopped part-way" in output
    assert "`cartag models reclassify` finishes it" in output
    assert "Traceback" not in output

    # The cut-off run stays recorded: `cartag models list` says so until a run finishes it.
    env = {**env, "CARTAG_PRECISION": "fp32", "CARTAG_ALLOWED_NETWORKS": "127.0.0.0/8"}
    listed = runner.invoke(app, ["models", "list"], env={**env, "COLUMNS": "250"})
    assert listed.exit_code == 0, listed.output
    assert "re-classification incomplete: cli-4 for every opted-in advertiser" in listed.output
    assert "nothing saved yet" in listed.output
    for name, rgb in PHOTOS.items():
        server.add_file(f"/{name}.jpg", jpeg_bytes(color=rgb))
    finished = runner.invoke(app, ["models", "reclassify"], env=env)
    assert finished.exit_code == 0, finished.output
    assert "re-classified with cli-4 for A: 2 images" in finished.output
    listed = runner.invoke(app, ["models", "list"], env=env)
    assert listed.exit_code == 0 and "incomplete" not in listed.output
