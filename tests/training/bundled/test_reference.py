"""The drift reference of a model folder, built from the corpus its heads are fitted on."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from typer.testing import CliRunner

from cartag.cli import app
from cartag.models.classifier import BUNDLED_DIR
from cartag.models.folder import CONFIG_NAME
from cartag.models.reference import REFERENCE_NAME, load_reference
from cartag.training.bundled.corpus import build_corpus_all
from cartag.training.bundled.reference import corpus_reference, write_reference
from cartag.training.datasets import all_sources
from tests.training.datasets.test_all_sources import MeanColor, make_root


def test_the_reference_sees_the_training_rows_and_measures_the_held_out_ones(
    tmp_path: Path,
) -> None:
    labels = make_root(tmp_path / "data")
    corpus = build_corpus_all(
        tmp_path / "data", all_sources.ALL, MeanColor(), tmp_path / "cache", 35, 0, labels
    )
    reference, built_from = corpus_reference(corpus, "mean-color@test", k=8)
    assert reference.centroids.shape == (8, 6)
    assert built_from["n_train"] == int((~corpus.holdout).sum())
    assert built_from["n_held_out"] == int(corpus.holdout.sum())
    assert built_from["data_sha256"] == corpus.data_hash
    held = reference.novelty(corpus.emb[corpus.holdout])
    assert reference.far_threshold == reference.quantiles["p95"]
    assert np.isclose(np.percentile(held, 95), reference.far_threshold, atol=1e-5)

    folder = tmp_path / "model"
    folder.mkdir()
    (folder / CONFIG_NAME).write_text(json.dumps({"format": "x", "version": "v1"}))
    block = write_reference(folder, reference, built_from)
    config = json.loads((folder / CONFIG_NAME).read_text())
    assert config["version"] == "v1" and config["reference"] == block
    assert (folder / REFERENCE_NAME).is_file()
    loaded = load_reference(folder, config)
    assert loaded is not None and loaded.serves("mean-color@test")


def test_the_bundled_model_ships_its_reference() -> None:
    config = json.loads((BUNDLED_DIR / CONFIG_NAME).read_text())
    block = config["reference"]
    assert block["embedding_id"] == config["backbone"]["backbone_id"]
    assert block["built_from"]["data_sha256"] == config["training"]["data_sha256"]
    assert (BUNDLED_DIR / REFERENCE_NAME).stat().st_size < 1_000_000
    assert load_reference(BUNDLED_DIR, config) is not None


def test_add_reference_refuses_a_folder_it_cannot_rebuild(tmp_path: Path) -> None:
    runner = CliRunner()
    result = runner.invoke(app, ["models", "add-reference", str(tmp_path / "nope")])
    assert result.exit_code == 2 and "does not exist" in result.output
    folder = tmp_path / "old"
    folder.mkdir()
    (folder / CONFIG_NAME).write_text(
        json.dumps(
            {
                "format": "cartag-model/1",
                "backbone": {"variant": "efficientnet-lite0"},
                "heads": {"image_type": "t", "color": "c"},
                "training": {},
            }
        )
    )
    result = runner.invoke(app, ["models", "add-reference", str(folder)], env={"COLUMNS": "200"})
    assert result.exit_code == 2 and "training.sources" in result.output
