"""Int8 heads for sweep candidates: the gate, the calibration photos, a real int8 sweep."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest

from cartag.clock import FakeClock
from cartag.deploy.sweeps import SweepRegistry
from cartag.errors import InputError
from cartag.imaging.decode import decode_image
from cartag.models.backbone import BackboneSpec
from cartag.models.classifier import BUNDLED_DIR, Classifier, EmbeddingClassifier
from cartag.models.heads import LinearHead
from cartag.models.quantization import QUANTIZATION_NAME, read_quantization
from cartag.settings import Settings
from cartag.store import model_versions as versions_repo
from cartag.store.db import Database
from cartag.training.fitting.quantization import GATE_TOLERANCE, INT8_HEADS
from cartag.training.sweep.candidates import Heads, render_candidate_card
from cartag.training.sweep.int8 import (
    Int8Heads,
    Ranges,
    calibration_rows,
    gate_rows,
    network_ranges,
    production_ranges,
    save_int8,
)
from cartag.training.sweep.leaderboard import load_leaderboard
from cartag.training.sweep.sweep import run_sweep
from cartag.training.sweep.sweep_config import parse_sweep
from cartag.training.sweep.sweep_data import DatasetView
from cartag.vocab import COLORS, IMAGE_TYPES
from tests.support.sweep_data import (
    Example,
    cache_embeddings,
    make_frozen_dataset,
)

# --- the gate ----------------------------------------------------------------------------


def _task(n: int, accuracy: float, macro_recall: float) -> dict[str, Any]:
    return {"n": n, "accuracy": accuracy, "macro_recall": macro_recall}


def _metrics(type_recall: float, color_top1: float) -> dict[str, Any]:
    return {
        "d@1:test": {
            "image_type": _task(200, 0.9, type_recall),
            "color": _task(150, color_top1, 0.5),
        },
        "d@1:test:advertiser=42": {"image_type": _task(20, 0.95, 0.9)},
    }


def test_gate_compares_type_macro_recall_and_color_top1_on_every_set() -> None:
    fp32 = _metrics(0.900, 0.800)
    rows = gate_rows(fp32, _metrics(0.900 - GATE_TOLERANCE, 0.801))
    assert [(r["test_set"], r["metric"]) for r in rows] == [
        ("d@1:test", "type macro recall"),
        ("d@1:test", "color top-1"),
        ("d@1:test:advertiser=42", "type macro recall"),
    ]
    # A loss of exactly the tolerance passes; a gain passes.
    assert all(r["within"] for r in rows)
    assert rows[0]["diff"] == -GATE_TOLERANCE and rows[1]["diff"] == 0.001

    worse = gate_rows(fp32, _metrics(0.900, 0.800 - GATE_TOLERANCE - 0.0001))
    assert [r["within"] for r in worse] == [True, False, True]
    # Color top-1 is the color figure, not its macro recall (which did not move).
    assert worse[1]["fp32"] == 0.8


def test_sets_too_small_to_measure_the_tolerance_are_shown_not_judged() -> None:
    fp32 = _metrics(0.9, 0.8)
    rows = gate_rows(fp32, _metrics(0.9, 0.7))
    # n = 200 is judged (one image = 0.005); the color set (150) and the advertiser set
    # (20) are not.
    assert [(r["n"], r["judged"]) for r in rows] == [(200, True), (150, False), (20, False)]
    heads = _int8_heads(True)
    heads.gate = rows  # color top-1 lost 0.1, on 150 images only
    assert heads.passed and heads.failures() == []
    heads.gate = gate_rows(fp32, _metrics(0.85, 0.8))  # type lost 0.05 on 200 images
    assert not heads.passed and len(heads.failures()) == 1


def test_gate_skips_what_only_one_side_scored() -> None:
    int8 = _metrics(0.9, 0.8)
    del int8["d@1:test"]["color"]
    rows = gate_rows(_metrics(0.9, 0.8), int8)
    assert [r["metric"] for r in rows] == ["type macro recall", "type macro recall"]


def _int8_heads(passed: bool) -> Int8Heads:
    rng = np.random.default_rng(0)

    def head(labels: tuple[str, ...]) -> LinearHead:
        k = len(labels)
        return LinearHead(labels, rng.normal(size=(4, k)), np.zeros(k), np.zeros(4), np.ones(4))

    type_head, color_head = head(IMAGE_TYPES), head(COLORS)
    ranges_path = BUNDLED_DIR / QUANTIZATION_NAME
    fp32 = _metrics(0.9, 0.8)
    int8 = _metrics(0.9 if passed else 0.85, 0.8)
    return Int8Heads(
        Heads(type_head, color_head),
        Ranges(ranges_path, read_quantization(ranges_path), "production"),
        "efficientnet-lite0-ft@x+int8@y",
        {},
        int8,
        gate_rows(fp32, int8),
    )


def test_heads_that_fail_the_gate_are_not_written_and_the_card_says_why(tmp_path: Path) -> None:
    # An earlier attempt of the same trial folder shipped int8 heads: they go.
    save_int8(tmp_path, _int8_heads(True), {"dataset_ref": "d@1"})
    assert (tmp_path / "type_head_int8.npz").is_file()
    part = save_int8(tmp_path, _int8_heads(False), {"dataset_ref": "d@1"})
    assert part.block is None and part.digest == ""
    assert list(tmp_path.iterdir()) == []
    assert part.record["shipped"] is False
    assert "d@1:test type macro recall 0.9000 -> 0.8500 (n=200)" in part.record["why"]
    card = render_candidate_card(_card_config(part.record), {})
    assert "**not shipped**" in card and "served fp32" in card
    assert "| d@1:test | type macro recall | 200 | 0.9000 | 0.8500 | -0.0500 |" in card


def test_heads_that_pass_are_written_with_the_ranges(tmp_path: Path) -> None:
    part = save_int8(tmp_path, _int8_heads(True), {"dataset_ref": "d@1"})
    assert part.block is not None and part.digest
    assert part.block["heads"] == INT8_HEADS
    assert {p.name for p in tmp_path.iterdir()} >= {
        QUANTIZATION_NAME,
        "type_head_int8.npz",
        "color_head_int8.npz",
    }
    copied = read_quantization(tmp_path / QUANTIZATION_NAME)
    assert copied.digest == part.block["ranges_sha256"]
    meta = json.loads((tmp_path / "type_head_int8.json").read_text(encoding="utf-8"))
    assert meta["backbone_id"] == "efficientnet-lite0-ft@x+int8@y"
    card = render_candidate_card(_card_config(part.record), {})
    assert "**shipped**" in card and "of the production model" in card


def _card_config(record: dict[str, Any]) -> dict[str, Any]:
    return {
        "version": "sweep-x",
        "created": "2026-12-08T00:00:00+00:00",
        "backbone": {"backbone_id": "b", "preprocess": "p"},
        "color_features": "f",
        "training": {
            "study": "s",
            "trial": 0,
            "dataset_ref": "d@1",
            "manifest_sha256": "m",
            "params": {"head_type": "linear"},
            "validation_fraction": 0.2,
            "validation_objective": 0.9,
            "int8": record,
        },
    }


# --- calibration photos and ranges ---------------------------------------------------------


def _view(types: list[int], splits: list[str]) -> DatasetView:
    n = len(types)
    return DatasetView(
        ref="d@1",
        manifest_sha256="m",
        shas=[f"{i:064x}" for i in range(n)],
        blob_paths=[f"b{i}" for i in range(n)],
        type_idx=np.asarray(types, dtype=np.int64),
        color_idx=np.zeros(n, dtype=np.int64),
        splits=splits,
        groups=[str(i) for i in range(n)],
    )


def test_calibration_takes_train_photos_only_in_a_fixed_order() -> None:
    placeholder = IMAGE_TYPES.index("Placeholder")
    types = [0, 1, placeholder, 0, 1, 0, placeholder, 0]
    splits = ["train", "train", "train", "test", "train", "train", "train", "test:advertiser=4"]
    view = _view(types, splits)
    rows = calibration_rows(view)
    assert sorted(rows.tolist()) == [0, 1, 4, 5]
    assert calibration_rows(view).tolist() == rows.tolist()
    assert len(calibration_rows(view, 2)) == 2
    # A train split of placeholders only still calibrates (on them).
    only = _view([placeholder, placeholder, 0], ["train", "train", "test"])
    assert sorted(calibration_rows(only).tolist()) == [0, 1]


def test_production_ranges_are_reused_only_for_its_own_network(tmp_path: Path) -> None:
    config = json.loads((BUNDLED_DIR / "config.json").read_text(encoding="utf-8"))
    own = config["backbone"]["backbone_id"]
    assert production_ranges(BUNDLED_DIR, own) == BUNDLED_DIR / QUANTIZATION_NAME
    assert production_ranges(BUNDLED_DIR, "efficientnet-lite0") is None
    # A production folder without int8 heads has no ranges to give.
    plain = tmp_path / "plain"
    plain.mkdir()
    del config["int8"]
    (plain / "config.json").write_text(json.dumps(config), encoding="utf-8")
    assert production_ranges(plain, own) is None


class _Source:
    """What network_ranges asks of a feature source before it measures anything."""

    def __init__(self, backbone_id: str) -> None:
        self.loaded = SimpleNamespace(backbone_id=backbone_id)

    def backbone(self, spec: BackboneSpec) -> Any:
        return self.loaded


def test_damaged_production_ranges_fall_back_to_the_dataset_ones(tmp_path: Path) -> None:
    config = json.loads((BUNDLED_DIR / "config.json").read_text(encoding="utf-8"))
    own = config["backbone"]["backbone_id"]
    production = tmp_path / "production"
    shutil.copytree(BUNDLED_DIR, production)
    source: Any = _Source(own)
    view = _view([0, 1], ["train", "test"])
    spec = BackboneSpec("efficientnet-lite0")
    assert network_ranges(source, view, spec, production, tmp_path / "kept").origin == "production"
    (production / QUANTIZATION_NAME).write_text("{not json", encoding="utf-8")
    # Ranges measured on the dataset by an earlier run are used (nothing is measured).
    photos = "\n".join(view.shas[i] for i in calibration_rows(view))
    kept = tmp_path / "kept" / own / hashlib.sha256(photos.encode()).hexdigest()[:16]
    kept = kept / QUANTIZATION_NAME
    kept.parent.mkdir(parents=True)
    shutil.copyfile(BUNDLED_DIR / QUANTIZATION_NAME, kept)
    ranges = network_ranges(source, view, spec, production, tmp_path / "kept")
    assert (ranges.origin, ranges.path) == ("dataset", kept)


# --- sweep.yaml ----------------------------------------------------------------------------


def test_int8_keys_parse_and_leave_the_default_study_name_alone() -> None:
    base = parse_sweep({"n_trials": 4})
    assert (base.int8, base.int8_tolerance) == (True, GATE_TOLERANCE)
    explicit = parse_sweep({"n_trials": 4, "int8": True, "int8_tolerance": GATE_TOLERANCE})
    assert explicit.digest() == base.digest()
    assert parse_sweep({"n_trials": 4, "int8": False}).digest() != base.digest()
    assert parse_sweep({"n_trials": 4, "int8_tolerance": 0.01}).digest() != base.digest()
    assert base.with_trials(5).int8_tolerance == GATE_TOLERANCE


@pytest.mark.parametrize(
    ("document", "field"),
    [
        ({"int8": "yes"}, "int8"),
        ({"int8_tolerance": 0.5}, "int8_tolerance"),
        ({"int8_tolerance": -0.01}, "int8_tolerance"),
        ({"int8_tolerance": "small"}, "int8_tolerance"),
    ],
)
def test_bad_int8_keys_are_named(document: dict[str, Any], field: str) -> None:
    with pytest.raises(InputError) as caught:
        parse_sweep(document)
    assert caught.value.field == field


# --- a real sweep with int8 heads -------------------------------------------------------------


@pytest.mark.slow
def test_a_sweep_serving_int8_ships_int8_heads_and_registers_what_servers_answer(
    sqlite_db: Database,
    settings: Settings,
    classifier: Classifier,
    tiny_examples: list[Example],
    precomputed: dict[str, np.ndarray],
) -> None:
    db = sqlite_db
    served = settings.model_copy(update={"precision": "int8", "engine": "onnx"})
    clock = FakeClock()
    ref = make_frozen_dataset(db, served, clock, tiny_examples)
    assert classifier.backbone_id is not None
    cache_embeddings(db, classifier.backbone_id, precomputed, clock)
    # ~20 test images: too few to judge the gate (tested above), so every trial ships
    # its int8 heads; a trial on lite0's ImageNet weights makes the sweep measure ranges
    # on the dataset.
    config = parse_sweep(
        {
            "n_trials": 4,
            "validation_fraction": 0.3,
            "mlp_epochs": 5,
            "search_space": {
                "head_type": "linear",
                "backbone": ["production", "lite0"],
                "augmentation": "none",
            },
        }
    )
    result = run_sweep(
        db,
        served,
        ref,
        config,
        clock=clock,
        registry=SweepRegistry(db, served, clock),
        threads=1,
    )
    assert result.completed == 4
    assert result.production is not None and result.production["precision"] == "int8"

    bundled = json.loads((BUNDLED_DIR / "config.json").read_text(encoding="utf-8"))
    with db.read() as session:
        rows = [v for v in versions_repo.list_versions(session) if v.version.startswith("sweep-")]
    assert len(rows) == 4
    by_backbone: dict[str, list[Any]] = {}
    for row in rows:
        folder = served.data_dir / "models" / row.version
        config_json = json.loads((folder / "config.json").read_text(encoding="utf-8"))
        record = config_json["training"]["int8"]
        assert record["gate"], record
        shipped = record["shipped"]
        # ~20 test images: no set is large enough to judge a loss of the tolerance.
        assert not any(r["judged"] for r in record["gate"])
        assert shipped
        by_backbone.setdefault(config_json["training"]["params"]["backbone"], []).append(
            (folder, config_json, row)
        )
        if not shipped:
            assert "int8" not in config_json
            continue
        block = config_json["int8"]
        model = EmbeddingClassifier.from_dir(
            folder, engine="onnx", precision="int8", cache_dir=served.resolved_cache_dir
        )
        assert model.backbone_id == block["backbone_id"]
        assert model.backbone_id.startswith(config_json["backbone"]["backbone_id"] + "+int8@")
        image = decode_image(tiny_examples[0].data, max_pixels=64_000_000).image
        assert model.predict([image])[0].image_type in IMAGE_TYPES
        # What is registered is what an int8 server answers: the int8 heads' figures.
        int8_type = {
            name: sets["image_type"]["macro_recall"]
            for name, sets in row.metrics.items()
            if "image_type" in sets
        }
        gate_type = {r["test_set"]: r["int8"] for r in record["gate"] if r["task"] == "image_type"}
        assert int8_type == gate_type
    assert set(by_backbone) == {"production", "lite0"}
    for _, config_json, _ in by_backbone["production"]:
        # On production's network: production's ranges, so production's int8 backbone.
        assert config_json["training"]["int8"]["ranges"] == "production"
        assert config_json["training"]["int8"]["backbone_id"] == bundled["int8"]["backbone_id"]
    for _, config_json, _ in by_backbone["lite0"]:
        assert config_json["training"]["int8"]["ranges"] == "dataset"
        measured = sorted(
            (served.resolved_cache_dir / "int8-ranges").glob(
                f"efficientnet-lite0@*/*/{QUANTIZATION_NAME}"
            )
        )
        assert len(measured) == 1
        calibration = read_quantization(measured[0]).calibration
        assert calibration["dataset_ref"] == ref
        train_photos = sum(
            1 for e in tiny_examples if e.split == "train" and e.image_type != "Placeholder"
        )
        assert calibration["photos"] == train_photos

    # Every report names the heads it measured; production's too.
    with db.read() as session:
        prod_row = versions_repo.find_version(session, result.production["version"])
    assert prod_row is not None
    assert {t["heads"] for t in prod_row.metrics[f"{ref}:test"].values()} == {"int8"}
    for row in rows:
        shipped = "int8" in json.loads(
            (served.data_dir / "models" / row.version / "config.json").read_text(encoding="utf-8")
        )
        heads = {t["heads"] for sets in row.metrics.values() for t in sets.values()}
        assert heads == {"int8" if shipped else "fp32"}
        assert {t["serving"] for sets in row.metrics.values() for t in sets.values()} == {"int8"}

    board = load_leaderboard(db, served, ref, config)
    assert board.production is not None and board.production.precision == "int8"

    # The same sweep with servers answering fp32 would record production at fp32 and mix
    # both in one study: refused before anything is scored.
    fp32 = served.model_copy(update={"precision": "fp32"})
    with pytest.raises(InputError) as caught:
        run_sweep(
            db, fp32, ref, config, clock=clock, registry=SweepRegistry(db, fp32, clock), threads=1
        )
    assert caught.value.field == "precision"
    assert "CARTAG_PRECISION=fp32" in str(caught.value)
    with db.read() as session:
        again = versions_repo.find_version(session, result.production["version"])
    assert again is not None and again.metrics == prod_row.metrics
