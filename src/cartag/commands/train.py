"""``cartag train``: run a sweep of candidate models on a frozen dataset, and its leaderboard.

    cartag train --dataset cars@3 --sweep sweep.yaml [--trials N]
    cartag train leaderboard --dataset cars@3 [--sweep sweep.yaml]

Training runs in this process, at a lower priority and on a share of the cores
(``CARTAG_TRAINING_NICE``, ``CARTAG_TRAINING_CPU_SHARE``), so a server on the same
machine keeps its throughput. The work lives in :mod:`cartag.training.sweep.sweep` and
:mod:`cartag.training.sweep.leaderboard` (the HTML report: :mod:`cartag.web.leaderboard`).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from cartag.commands.common import err, fail, load_settings, open_database
from cartag.errors import CartagError
from cartag.settings import Settings

if TYPE_CHECKING:
    from cartag.store.db import Database
    from cartag.training.sweep.sweep_config import SweepConfig

app = typer.Typer(
    help="Train candidate models with a sweep and compare them with production.",
    no_args_is_help=False,
)
out = Console(soft_wrap=True)


def _sweep(path: Path, trials: int | None, *, to_train: bool = True) -> SweepConfig:
    from cartag.training.sweep.sweep_config import check_backbones, load_sweep

    config = load_sweep(path)
    if to_train:
        check_backbones(config)
    return config.with_trials(trials) if trials is not None else config


@app.callback(invoke_without_command=True)
def train(
    ctx: typer.Context,
    dataset: Annotated[
        str | None, typer.Option("--dataset", help="Frozen dataset version, NAME@N (or NAME).")
    ] = None,
    sweep: Annotated[
        Path | None, typer.Option("--sweep", help="Sweep file (see examples/sweep.yaml).")
    ] = None,
    trials: Annotated[
        int | None, typer.Option("--trials", help="Total trials of the study (4-8).")
    ] = None,
) -> None:
    """Train 4-8 candidate configurations (resumable), register them, show the leaderboard."""
    if ctx.invoked_subcommand is not None:
        return
    if dataset is None or sweep is None:
        err.print(
            "[red]error:[/red] give --dataset NAME@N and --sweep FILE "
            "(e.g. cartag train --dataset cars@3 --sweep examples/sweep.yaml)"
        )
        raise typer.Exit(2)
    settings = load_settings()
    # Everything that can be wrong with the arguments is checked before training starts.
    try:
        config = _sweep(sweep, trials)
        db = open_database(settings)
    except CartagError as exc:
        raise fail(exc) from exc
    try:
        _check_frozen(db, dataset)
    except CartagError as exc:
        db.dispose()
        raise fail(exc) from exc
    from cartag.training.sweep.cpu_share import apply_cpu_share

    share = apply_cpu_share(settings)
    err.print(
        f"training on {share.threads} of {share.cores} cores at nice {share.nice} "
        "(CARTAG_TRAINING_CPU_SHARE, CARTAG_TRAINING_NICE)"
    )
    try:
        _run(db, settings, dataset, config, share.threads)
    except CartagError as exc:
        raise fail(exc) from exc
    except KeyboardInterrupt:
        # Ctrl-C ended the command without a word (exit 130); the sweep resumes.
        err.print(
            "[red]interrupted:[/red] the trial that was running is marked failed and will be "
            "replaced; completed trials are kept, and so are the embeddings computed so far. "
            "Run the same command again to resume the sweep"
        )
        raise typer.Exit(130) from None
    finally:
        db.dispose()


def _check_frozen(db: Database, ref: str) -> None:
    from cartag.errors import ConflictError
    from cartag.store import datasets

    with db.read() as session:
        version = datasets.get_version(session, ref)
        if version.status != datasets.FROZEN:
            # A bare NAME means its latest version, a draft while it is being reviewed:
            # the frozen one before it is what the user may have meant.
            frozen = [
                v.ref
                for v in datasets.list_versions(session, version.name)
                if v.status == datasets.FROZEN
            ]
            other = (
                f", or train on its latest frozen version (--dataset {frozen[-1]})"
                if frozen and "@" not in ref
                else ""
            )
            raise ConflictError(
                f"dataset version {version.ref} is a draft; review it and freeze it "
                f"(cartag dataset freeze {version.ref}) before training on it{other}"
            )


def _run(db: Database, settings: Settings, ref: str, config: SweepConfig, threads: int) -> None:
    from cartag.clock import SystemClock
    from cartag.deploy.sweeps import SweepRegistry
    from cartag.training.sweep.leaderboard import load_leaderboard, rich_table
    from cartag.training.sweep.sweep import SweepCallbacks, run_sweep
    from cartag.training.sweep.sweep_config import describe
    from cartag.web.leaderboard import write_leaderboard

    clock = SystemClock()
    started = time.monotonic()
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=err,
    ) as progress:
        stages: dict[str, Any] = {}
        trials_bar = progress.add_task("trials", total=config.n_trials)

        def on_stage(stage: str, done: int, total: int) -> None:
            if stage not in stages:
                stages[stage] = progress.add_task(stage, total=total)
            progress.update(stages[stage], completed=done, total=total)

        def on_trial_start(number: int, params: dict[str, Any]) -> None:
            progress.update(trials_bar, description=f"trial {number}: {describe(params)}")

        def on_trial_end(number: int, value: float, seconds: float) -> None:
            progress.console.print(
                f"trial {number}: validation macro recall {value:.4f} ({seconds:.1f} s)"
            )
            progress.advance(trials_bar)

        def on_trial_int8(number: int, record: dict[str, Any]) -> None:
            if record["shipped"]:
                serves = (
                    "served by default"
                    if settings.engine == "onnx"
                    else "registered at fp32 here (CARTAG_ENGINE=torch); servers on onnx serve them"
                )
                line = f"trial {number}: int8 heads within {record['tolerance']} of fp32, {serves}"
            else:
                line = f"trial {number}: no int8 heads ({record['why']})"
            progress.console.print(line)

        result = run_sweep(
            db,
            settings,
            ref,
            config,
            clock=clock,
            registry=SweepRegistry(db, settings, clock),
            threads=threads,
            callbacks=SweepCallbacks(on_stage, on_trial_start, on_trial_end, on_trial_int8),
        )
        progress.update(trials_bar, completed=result.completed, description="trials")
    elapsed = time.monotonic() - started
    err.print(
        f"{result.study}: {result.new_trials} new trial(s), {result.completed} completed, "
        f"{elapsed:.1f} s"
    )
    if result.running:
        from cartag.training.sweep.study import GRACE_S

        numbers = ", ".join(str(n) for n in result.running)
        err.print(
            f"still running: trial {numbers} (counted in the {config.n_trials}): another "
            f"process's, or one whose process died, which is failed {GRACE_S} s after its "
            "last heartbeat; run this command again then and it is replaced"
        )
    board = load_leaderboard(db, settings, ref, config)
    out.print(rich_table(board))
    path = write_leaderboard(board, settings, now=clock.now())
    if result.best_version:
        out.print(f"candidate: {result.best_version} (promote with `cartag models promote`)")
    out.print(f"report: {path}")


@app.command("leaderboard")
def leaderboard(
    dataset: Annotated[str, typer.Option("--dataset", help="Dataset version, NAME@N.")],
    sweep: Annotated[
        Path | None, typer.Option("--sweep", help="The sweep file (default: the latest sweep).")
    ] = None,
) -> None:
    """Re-render the leaderboard table and HTML report of a sweep."""
    from cartag.clock import SystemClock
    from cartag.training.sweep.leaderboard import load_leaderboard, rich_table
    from cartag.web.leaderboard import write_leaderboard

    settings = load_settings()
    try:
        config = _sweep(sweep, None, to_train=False) if sweep is not None else None
        db = open_database(settings)
    except CartagError as exc:
        raise fail(exc) from exc
    try:
        board = load_leaderboard(db, settings, dataset, config)
        out.print(rich_table(board))
        out.print(f"report: {write_leaderboard(board, settings, now=SystemClock().now())}")
    except CartagError as exc:
        raise fail(exc) from exc
    finally:
        db.dispose()
