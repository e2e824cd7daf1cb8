"""``cartag train --sweep``: an Optuna study of head configurations on a frozen dataset.

The study lives in the project's database (:mod:`cartag.training.sweep.study`), so
several processes or machines can run trials of one sweep, and re-running the same
command resumes it: the study name is derived from the dataset ref and the sweep
file's hash (without ``n_trials``), completed trials are never re-run and a trial
whose process died is marked failed by its missing heartbeat and replaced.

Each trial (:mod:`cartag.training.sweep.candidates`) fits heads on cached embeddings
(:mod:`cartag.training.sweep.sweep_data`), maximises the validation fold's macro recall,
writes a model folder under ``<data_dir>/candidates/<study>/<trial>/``, scores it on
every test set of the dataset and registers it with those metrics. When the settings
serve int8, each trial also fits int8 heads, shipped only within the sweep's tolerance of
its float ones (:mod:`cartag.training.sweep.int8`); the metrics registered, the objective
and the leaderboard's are then of what a server answers. The production model is scored
on the same sets in the same run, at the precision servers answer with. The best trial gets the
``candidate`` alias; nothing is ever promoted here (gates:
:mod:`cartag.gates`, promotion: ``cartag models promote``). The registry is passed in
(:class:`~cartag.training.sweep.production.ModelRegistry`): training does not import deploy.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from cartag.clock import Clock
from cartag.errors import InputError
from cartag.models.backbone import BackboneSpec
from cartag.models.classifier import backbone_spec
from cartag.settings import Settings
from cartag.store.blobs import blob_store
from cartag.store.db import Database
from cartag.store.model_versions import find_version
from cartag.training.sweep.candidates import (
    TrialParams,
    evaluate_heads,
    macro_recall,
    stamped,
    train_candidate,
    write_candidate,
)
from cartag.training.sweep.int8 import Int8Trials, serving
from cartag.training.sweep.production import ModelRegistry, evaluate_production
from cartag.training.sweep.study import close_storage, folder_name, optuna_storage, study_name
from cartag.training.sweep.sweep_config import (
    BACKBONE_VARIANTS,
    Range,
    SweepConfig,
    check_backbones,
)
from cartag.training.sweep.sweep_data import (
    DatasetView,
    Features,
    FeatureSource,
    Progress,
    check_training_rows,
    check_type_classes,
    load_view,
)

if TYPE_CHECKING:
    import optuna

CREATED_BY: Final[str] = "cartag train"


@dataclass
class SweepCallbacks:
    """Progress hooks for the CLI.

    Attributes:
        on_stage: Embedding/feature computation progress ``(stage, done, total)``.
        on_trial_start: ``(trial number, params)``.
        on_trial_end: ``(trial number, validation objective, seconds)``.
        on_trial_int8: ``(trial number, the folder's training.int8 record)`` when the
            sweep made int8 heads (``shipped``, and ``why`` when not).
    """

    on_stage: Progress | None = None
    on_trial_start: Callable[[int, dict[str, Any]], None] | None = None
    on_trial_end: Callable[[int, float, float], None] | None = None
    on_trial_int8: Callable[[int, dict[str, Any]], None] | None = None


@dataclass
class SweepResult:
    """What a run did.

    Attributes:
        study: The study name.
        new_trials: Trials this process ran to completion (others may share the study).
        completed: Completed trials of the study in all.
        best_version: The model version of the best trial (alias ``candidate``).
        production: ``{"version", "registered", "metrics"}`` of the model compared against.
        running: Trials still running when this run ended: another process's, or one
            whose process died and whose heartbeat is younger than the grace period
            (a later run fails and replaces it).
    """

    study: str
    new_trials: int
    completed: int
    best_version: str | None
    production: dict[str, Any] | None = field(default=None)
    running: list[int] = field(default_factory=list)


def covering_params(config: SweepConfig) -> list[dict[str, str]]:
    """Choices for the first trials so that every listed choice is tried at least once.

    With 4-8 trials a sampler may never draw, say, ``head_type: linear``; the first
    ``max(len(choices))`` trials take the choices round-robin (ranges are still sampled).
    """
    lists = {n: p for n, p in config.space.items() if isinstance(p, tuple) and len(p) > 1}
    if not lists:
        return []
    rounds = min(config.n_trials, max(len(p) for p in lists.values()))
    return [{n: p[i % len(p)] for n, p in lists.items()} for i in range(rounds)]


def _suggest(trial: optuna.Trial, config: SweepConfig) -> dict[str, Any]:
    params: dict[str, Any] = {}
    for name, space in config.space.items():
        if isinstance(space, Range):
            params[name] = trial.suggest_float(name, space.low, space.high, log=space.log)
        else:
            params[name] = trial.suggest_categorical(name, list(space))
    return params


def _register(
    db: Database,
    registry: ModelRegistry,
    model_dir: Path,
    version: str,
    *,
    view: DatasetView,
    metrics: dict[str, Any],
) -> None:
    with db.read() as session:
        known = find_version(session, version) is not None
    if known:
        # A trial re-run after a crash between registering and completing.
        registry.record_metrics(version, metrics)
        return
    registry.register(model_dir, created_by=CREATED_BY, dataset_ref=view.ref, metrics=metrics)


def run_sweep(
    db: Database,
    settings: Settings,
    ref: str,
    config: SweepConfig,
    *,
    clock: Clock,
    registry: ModelRegistry,
    threads: int = 0,
    callbacks: SweepCallbacks | None = None,
) -> SweepResult:
    """Run (or resume) the sweep of ``config`` on the frozen dataset ``ref``.

    Args:
        db: The project's database (the study is stored there too).
        settings: ``data_dir`` (candidates, blobs), backbone engine, model dir.
        ref: Dataset version (``NAME@N`` or ``NAME`` for the latest).
        config: The sweep; ``n_trials`` is the study's total.
        clock: Timestamps.
        registry: The model registry (trials are registered there, production's
            metrics recorded, the best trial named ``candidate``); the CLI passes
            :class:`cartag.deploy.sweeps.SweepRegistry`.
        threads: Backbone threads (training's CPU share); 0 = leave the process's setting.
        callbacks: Progress hooks.

    Returns:
        What was done; the leaderboard (:mod:`cartag.training.sweep.leaderboard`) shows the rest.

    Raises:
        NotFoundError: No such dataset version.
        ConflictError: The version is a draft.
        InputError: The version has no train or test items, its train split lacks an
            image type (e.g. no Placeholder: add ``--placeholders``), or the sweep names a
            backbone whose weights are not installed.
    """
    import optuna

    # A failed trial is re-raised with its message; Optuna would also log its traceback.
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    with _torch_threads(threads):
        return _run_sweep(
            db,
            settings,
            ref,
            config,
            clock=clock,
            registry=registry,
            threads=threads,
            hooks=callbacks,
        )


@contextmanager
def _torch_threads(threads: int) -> Iterator[None]:
    """Cap torch's intra-op threads for the block (0: leave them), then restore them.

    The heads are small; on a busy machine, extra threads only add synchronisation.
    """
    import torch

    before = torch.get_num_threads()
    if threads > 0:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _run_sweep(
    db: Database,
    settings: Settings,
    ref: str,
    config: SweepConfig,
    *,
    clock: Clock,
    registry: ModelRegistry,
    threads: int,
    hooks: SweepCallbacks | None,
) -> SweepResult:
    import optuna
    from optuna.study import MaxTrialsCallback
    from optuna.trial import TrialState

    hooks = hooks or SweepCallbacks()
    check_backbones(config)
    view = load_view(db, ref)
    check_type_classes(view)
    validation = view.validation_mask(config.validation_fraction, config.seed)
    check_training_rows(view, validation, config.validation_fraction)
    name = study_name(view.ref, config)
    out_root = settings.data_dir / "candidates" / folder_name(name)
    source = FeatureSource(
        db, blob_store(settings), settings, clock, threads=threads, progress=hooks.on_stage
    )
    storage = optuna_storage(db)
    try:
        study = optuna.create_study(
            study_name=name, storage=storage, direction="maximize", load_if_exists=True
        )
        # Seeded by the number of trials so far: a resumed run does not replay the
        # first run's random draws.
        study.sampler = optuna.samplers.TPESampler(
            seed=config.seed + len(study.trials), n_startup_trials=max(2, config.n_trials // 2)
        )
        if not study.trials:
            for params in covering_params(config):
                study.enqueue_trial(params, skip_if_exists=True)
        study.set_user_attr("dataset_ref", view.ref)
        study.set_user_attr("manifest_sha256", view.manifest_sha256)
        study.set_user_attr("sweep_sha256", config.digest())
        serves = serving(settings)
        _check_served(study, serves, settings)
        study.set_user_attr("served", serves)

        production = evaluate_production(db, settings, view, source, registry)
        study.set_user_attr("production", production)

        production_dir = Path(production["model_dir"])
        production_spec = backbone_spec(production_dir)
        cache: dict[tuple[BackboneSpec, bool, Path | None], Features] = {}
        int8 = Int8Trials(
            config,
            settings,
            source,
            view,
            production_dir,
            settings.resolved_cache_dir / "int8-ranges",
            validation,
        )

        def features_of(spec: BackboneSpec, flip: bool, ranges: Path | None = None) -> Features:
            if (spec, flip, ranges) not in cache:
                cache[(spec, flip, ranges)] = source.features(
                    view,
                    spec,
                    flipped=flip,
                    recolored_per_color=config.recolored_per_color,
                    seed=config.seed,
                    quantization=ranges,
                )
            return cache[(spec, flip, ranges)]

        # The trials this process ran: others sharing the study complete theirs meanwhile,
        # and counting the study's growth gave each process the other's trials too.
        ran: list[int] = []

        def objective(trial: optuna.Trial) -> float:
            started = time.monotonic()
            params = TrialParams.from_dict(_suggest(trial, config))
            if hooks.on_trial_start:
                hooks.on_trial_start(trial.number, dict(trial.params))
            spec = (
                production_spec
                if params.backbone == "production"
                else BackboneSpec(BACKBONE_VARIANTS[params.backbone])
            )
            flip = params.augmentation == "flip"
            features = features_of(spec, flip)
            seed = config.seed + trial.number
            heads, val_metrics = train_candidate(
                features,
                view,
                params,
                validation=validation,
                mlp_epochs=config.mlp_epochs,
                noise_std=config.noise_std,
                seed=seed,
            )
            test_metrics = {
                set_name: evaluate_heads(heads, features, view, rows)
                for set_name, rows in view.test_sets.items()
            }
            out_dir = out_root / str(trial.number)
            now = clock.now()
            served = _Served(val_metrics, test_metrics)
            made = int8.make(spec, params, seed, test_metrics, out_dir, now, features_of)
            part = None if made is None else made[0]
            if made is not None and made[1] is not None and made[1].passed and int8.served:
                served = _Served(made[1].validation, made[1].test, "int8")
            written = write_candidate(
                out_dir,
                heads,
                source.backbone(spec),
                view=view,
                params=params,
                study=name,
                trial=trial.number,
                validation_fraction=config.validation_fraction,
                validation_metrics=val_metrics,
                test_metrics=test_metrics,
                now=now,
                reference_rows=(features.emb[view.train], features.emb[view.tested]),
                int8=part,
            )
            version = str(written["version"])
            metrics = stamped(served.test, served.precision, serves)
            _register(db, registry, out_dir, version, view=view, metrics=metrics)
            # The fp32 heads' validation score, whichever heads ship: the int8 gate reads
            # the test sets, and they must not choose the configuration.
            value = macro_recall(val_metrics)
            seconds = time.monotonic() - started
            trial.set_user_attr("version", version)
            trial.set_user_attr("model_dir", str(out_dir))
            trial.set_user_attr("validation", val_metrics)
            trial.set_user_attr("metrics", metrics)
            trial.set_user_attr("precision", served.precision)
            if part is not None:
                trial.set_user_attr("int8", {k: v for k, v in part.record.items() if k != "gate"})
            trial.set_user_attr("seconds", round(seconds, 2))
            if hooks.on_trial_int8 and part is not None:
                hooks.on_trial_int8(trial.number, part.record)
            if hooks.on_trial_end:
                hooks.on_trial_end(trial.number, value, seconds)
            ran.append(trial.number)
            return value

        # A trial whose process died stays RUNNING until it is failed for its stale
        # heartbeat, which Optuna does only when a trial starts; the budget below counts
        # running trials, so a sweep whose last trial died never started another and
        # kept that one running (3 of 4 completed, on every run).
        _fail_stale_trials(study)
        counted = (TrialState.COMPLETE, TrialState.RUNNING)
        remaining = config.n_trials - len(study.get_trials(deepcopy=False, states=counted))
        if remaining > 0:
            study.optimize(
                objective,
                n_trials=remaining,
                callbacks=[MaxTrialsCallback(config.n_trials, states=counted)],
            )
        complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        best_version = None
        if complete:
            best = max(complete, key=lambda t: (t.value or 0.0, -t.number))
            best_version = str(best.user_attrs["version"])
            registry.point_candidate(best_version, by=CREATED_BY, reason="sweep")
        running = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
        return SweepResult(
            study=name,
            new_trials=len(ran),
            completed=len(complete),
            best_version=best_version,
            production=production,
            running=sorted(t.number for t in running),
        )
    finally:
        close_storage(storage)


@dataclass(frozen=True)
class _Served:
    """The metrics of what a server answers with a trial's folder: its float heads, or
    its int8 heads when they shipped and the settings serve int8."""

    validation: dict[str, Any]
    test: dict[str, Any]
    precision: str = "fp32"


def _check_served(study: optuna.Study, served: str, settings: Settings) -> None:
    """Refuse to resume a sweep whose trials were registered for another precision.

    Its production and candidates were scored as servers of ``served`` answer; a run
    with other settings would record production's figures again in the other precision
    and mix both in one study.

    Raises:
        InputError: Naming the settings of the first run.
    """
    before = study.user_attrs.get("served")
    if before is None or before == served:
        return
    raise InputError(
        f"this sweep was run for servers answering with {before} heads; these settings "
        f"(CARTAG_PRECISION={settings.precision}, CARTAG_ENGINE={settings.engine}) answer "
        f"with {served} heads. Run it with the settings of its first run; a sweep for "
        "these servers needs its own sweep file (the file's hash names the study)",
        "precision",
    )


def _fail_stale_trials(study: optuna.Study) -> None:
    """Fail the study's running trials whose heartbeat is older than the grace period."""
    import optuna

    with warnings.catch_warnings():
        # fail_stale_trials is marked experimental; the warning is not for our users.
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        optuna.storages.fail_stale_trials(study)
