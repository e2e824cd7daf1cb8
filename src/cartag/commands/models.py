"""``cartag models``: the model registry — list, register, promote, rollback, history, reclassify;
building the bundled model (:mod:`cartag.commands.model_build`).

It only translates: the work is :mod:`cartag.deploy`'s (re-classification:
:mod:`cartag.jobs.reclassify`). Imports stay inside the commands, as in every command
module, so that ``cartag --help`` does not load the model stack. Running servers follow
the ``production`` alias within ``CARTAG_MODEL_POLL_S``, so a promotion or rollback from
here hot-swaps every server without a restart.
"""

from __future__ import annotations

import asyncio
import getpass
import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich import box
from rich.console import Console
from rich.table import Table

from cartag.commands import model_build
from cartag.commands.common import err, fail, load_settings, open_database
from cartag.errors import CartagError, ConflictError, InputError
from cartag.gates import check_metrics, is_figure
from cartag.settings import Settings
from cartag.vocab import check_advertiser_id

if TYPE_CHECKING:
    from cartag.jobs.reclassify import ReclassifyReport
    from cartag.store.db import Database
    from cartag.store.tables import DeploymentRow, ModelVersionRow, ReclassifyRequestRow

app = typer.Typer(
    help="The model registry: list, register, promote, rollback; build the bundled model.",
    no_args_is_help=True,
)

AliasOpt = Annotated[str, typer.Option(help="production or candidate.")]
ByOpt = Annotated[str | None, typer.Option("--by", help="Who does it (default: your user).")]
ReclassifyOpt = Annotated[
    bool,
    typer.Option(
        "--reclassify/--no-reclassify",
        help="Then re-classify the opted-in advertisers' images with the production model "
        "(without: print the command that does it).",
    ),
]


def _user(by: str | None) -> str:
    if by:
        return by
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "cli"


def _registry(settings: Settings) -> Database:
    """The migrated store, with the bundled model registered on a first use."""
    from cartag.clock import SystemClock
    from cartag.deploy.registry import ensure_initial

    db = open_database(settings)
    ensure_initial(db, settings, clock=SystemClock())
    return db


def key_metrics(row: ModelVersionRow) -> str:
    """A short summary, one line per task: accuracy and macro recall on the first
    evaluation set, or the held-out figures of the model's own card when it has no
    recorded metrics; the first line names the set."""
    if row.metrics:
        name = sorted(row.metrics)[0]
        tasks: dict[str, Any] = row.metrics[name]
        source = name + (f" (+{len(row.metrics) - 1} sets)" if len(row.metrics) > 1 else "")
    else:
        heads = row.card.get("heads") or {}
        tasks = {
            task: ((meta or {}).get("metrics") or {}).get("held_out") or {}
            for task, meta in heads.items()
        }
        source = "card, held-out"
    lines = []
    for task, short in (("image_type", "type"), ("color", "color")):
        report = tasks.get(task) or {}
        if isinstance(report, dict) and is_figure(report.get("accuracy")):
            recall = report.get("macro_recall")
            heads = report.get("heads")
            lines.append(
                f"{short:<5} acc {report['accuracy']:.3f}"
                + (f" rec {recall:.3f}" if is_figure(recall) else "")
                + (f" ({heads})" if heads in ("int8", "fp32") else "")
            )
    return "\n".join([source, *lines]) if lines else "-"


@app.command("list")
def list_models() -> None:
    """Registered versions, newest first, with their aliases and key metrics."""
    from cartag.store import model_versions as repo
    from cartag.store import reclassify_requests

    settings = load_settings()
    try:
        db = _registry(settings)
    except CartagError as exc:
        raise fail(exc) from exc
    # Fits an 80-column terminal: one line per fact, the version never wraps.
    table = Table(box=box.SIMPLE_HEAD, pad_edge=False, collapse_padding=True)
    table.add_column("version", no_wrap=True)
    table.add_column("status", overflow="fold")
    table.add_column("created", max_width=10)
    table.add_column("data / key metrics", overflow="fold")
    with db.read() as session:
        aliases = repo.aliases_by_version(session)
        for row in repo.list_versions(session):
            table.add_row(
                row.version,
                "\n".join([row.status, *aliases.get(row.version, [])]),
                row.created_at.strftime("%Y-%m-%d\n%H:%M UTC"),
                f"data: {row.dataset_ref or '-'}\n{key_metrics(row)}",
                end_section=True,
            )
        pending = reclassify_requests.incomplete(session)
    Console().print(table)
    for request in pending:
        err.print(incomplete_note(request))


def incomplete_note(request: ReclassifyRequestRow) -> str:
    """One line on a re-classification with production asked for and not finished."""
    from cartag.deploy.followup import RECLASSIFY_COMMAND

    whom = request.advertiser_id or "every opted-in advertiser"
    progress = (
        f"last progress {request.progress_at:%Y-%m-%d %H:%M:%S} UTC"
        if request.progress_at
        else "nothing saved yet"
    )
    stopped = f"; it stopped: {request.error}" if request.error else ""
    command = RECLASSIFY_COMMAND + (
        f" --advertiser {request.advertiser_id}" if request.advertiser_id else ""
    )
    return (
        f"[yellow]re-classification incomplete:[/yellow] {request.version} for {whom}, asked "
        f"{request.requested_at:%Y-%m-%d %H:%M:%S} UTC by {request.requested_by} "
        f"({progress}{stopped}); the images not reached keep an earlier model's answers "
        f"until it finishes. A server serving {request.version} takes it over once its run "
        f"has been silent for CARTAG_JOB_LEASE_S; `{command}` finishes it now"
    )


@app.command("register")
def register(
    path: Annotated[Path, typer.Argument(help="A model folder: config.json + head files.")],
    dataset: Annotated[
        str | None, typer.Option(help="The dataset version it was trained on, e.g. cars@3.")
    ] = None,
    metrics: Annotated[
        Path | None, typer.Option(help="A JSON file of evaluation metrics to record with it.")
    ] = None,
    by: ByOpt = None,
) -> None:
    """Copy a model into the registry after a load and smoke check (refused if it fails)."""
    from cartag.clock import SystemClock
    from cartag.deploy.registry import record_metrics, register_model

    settings = load_settings()
    try:
        if not path.is_dir():
            raise InputError(f"{path} is not a folder", field="path")
        recorded = None
        if metrics is not None:
            try:
                recorded = json.loads(metrics.read_text(encoding="utf-8"))
            except (OSError, ValueError) as exc:
                raise InputError(f"cannot read metrics {metrics}: {exc}", "metrics") from exc
            if not isinstance(recorded, dict):
                raise InputError(f"{metrics} must hold a JSON object", "metrics")
            check_metrics(recorded, str(metrics))
        db = _registry(settings)
        dataset_ref, in_store = _dataset_ref(db, dataset)
        existing = _registered_already(db, path)
        row = register_model(
            db,
            settings,
            path,
            created_by=_user(by),
            clock=SystemClock(),
            dataset_ref=dataset_ref,
            metrics=recorded,
        )
        if existing is not None:
            # The same files again: register_model kept the row as it was, so what this
            # command was given is checked against it, and the metrics recorded now.
            if dataset_ref is not None and row.dataset_ref != dataset_ref:
                raise ConflictError(
                    f"model {row.version} is registered already, trained on "
                    f"{row.dataset_ref or 'no dataset named'}, not {dataset_ref}; leave "
                    "--dataset out, or give the new model another version in its config.json"
                )
            if recorded:
                record_metrics(db, row.version, recorded)
    except CartagError as exc:
        raise fail(exc) from exc
    if dataset_ref is not None and not in_store:
        err.print(
            f"note: dataset {dataset_ref} is not in this store: while {row.version} is "
            "production, `cartag dataset create --add-fixes-since last-retrain` takes the "
            "parent's creation as the cutoff"
        )
    if existing is None:
        err.print(f"registered {row.version} ({row.files_sha256[:12]}); promote it with:")
    else:
        sets = f"; recorded its metrics on {', '.join(sorted(recorded))}" if recorded else ""
        err.print(
            f"{row.version} is registered already with these files "
            f"({row.files_sha256[:12]}, {row.created_at:%Y-%m-%d %H:%M} UTC){sets}; "
            "promote it with:"
        )
    typer.echo(f"cartag models promote {row.version}")


def _dataset_ref(db: Database, ref: str | None) -> tuple[str | None, bool]:
    """``--dataset`` as a version ref (``NAME`` is its latest), and whether it is in the store.

    A model trained on another store's data may name a version this one does not have.

    Raises:
        InputError: Not ``NAME@N`` nor the name of a dataset of this store.
    """
    from cartag.errors import NotFoundError
    from cartag.store import datasets

    if ref is None:
        return None, False
    with db.read() as session:
        try:
            return datasets.get_version(session, ref).ref, True
        except NotFoundError:
            if "@" not in ref:
                raise InputError(
                    f"--dataset {ref!r}: no dataset of that name in this store; give the "
                    "version the model was trained on, NAME@N (e.g. cars@3)",
                    "dataset",
                ) from None
            return ref.strip(), False
        except InputError as exc:
            raise InputError(f"--dataset: {exc.message}", "dataset") from exc


def _registered_already(db: Database, folder: Path) -> ModelVersionRow | None:
    """The registered row of the version ``folder``'s config names, if there is one."""
    from cartag.models.classifier import read_config
    from cartag.store import model_versions as repo

    try:
        version = str(read_config(folder).get("version") or "")
    except CartagError:
        return None  # the registration says what is wrong with the folder
    with db.read() as session:
        row = repo.find_version(session, version)
    return row if row is not None and row.status == repo.REGISTERED else None


@app.command("promote")
def promote(
    version: Annotated[str, typer.Argument(help="A registered version.")],
    force: Annotated[bool, typer.Option("--force", help="Skip the promotion gates.")] = False,
    alias: AliasOpt = "production",
    by: ByOpt = None,
    reclassify: ReclassifyOpt = True,
) -> None:
    """Point an alias at a version; servers hot-swap to it. Exits 2 when a gate fails."""
    from cartag.clock import SystemClock
    from cartag.deploy import promote as promotion
    from cartag.gates import PromotionGatedError

    settings = load_settings()
    try:
        db = _registry(settings)
        deployment = promotion.promote(
            db, settings, version, by=_user(by), clock=SystemClock(), alias=alias, force=force
        )
    except PromotionGatedError as exc:
        err.print(f"[red]refused:[/red] {version} fails {len(exc.failures)} promotion gate(s):")
        for failure in exc.failures:
            err.print(f"  - {failure}")
        err.print("fix the candidate, or promote anyway with --force")
        raise typer.Exit(2) from exc
    except CartagError as exc:
        raise fail(exc) from exc
    err.print(f"{alias} -> {deployment.version}; {_who_follows(settings, alias)}")
    _follow_up(settings, db, deployment, reclassify, _user(by))


def _who_follows(settings: Settings, alias: str) -> str:
    """What a move of ``alias`` changes: servers follow production only."""
    if alias == "production":
        return f"servers switch within {settings.model_poll_s:g} s"
    return "servers keep serving production (they follow that alias only)"


@app.command("rollback")
def rollback(
    alias: AliasOpt = "production",
    by: ByOpt = None,
    reclassify: ReclassifyOpt = True,
) -> None:
    """Point an alias back at the version it had before its current one (no gates)."""
    from cartag.clock import SystemClock
    from cartag.deploy import promote as promotion

    settings = load_settings()
    try:
        db = _registry(settings)
        deployment = promotion.rollback(
            db, settings, by=_user(by), clock=SystemClock(), alias=alias
        )
    except CartagError as exc:
        raise fail(exc) from exc
    err.print(f"{alias} rolled back to {deployment.version}; {_who_follows(settings, alias)}")
    _follow_up(settings, db, deployment, reclassify, _user(by))


def _follow_up(
    settings: Settings, db: Database, deployment: DeploymentRow, run: bool, by: str
) -> None:
    """After a promotion or a rollback alike: re-classify the opted-in advertisers' images
    with the version now in production, or say how to."""
    from cartag.deploy import followup

    try:
        plan = followup.plan(db, deployment, run)
    except CartagError as exc:
        raise fail(exc) from exc
    if plan.run:
        _reclassify(settings, db, None, by=by, quiet_if_none=True)
    elif plan.command is not None:
        err.print(
            f"the images of {', '.join(plan.advertisers)} (opted in) keep the answers of the "
            f"model before {plan.version} until re-classified:"
        )
        typer.echo(plan.command)


@app.command("history")
def history(alias: AliasOpt = "production") -> None:
    """Which version served when, and why (promote, rollback, initial)."""
    from cartag.store import model_versions as repo

    settings = load_settings()
    try:
        repo.check_alias(alias)
        db = _registry(settings)
    except CartagError as exc:
        raise fail(exc) from exc
    table = Table("version", "from", "until", "reason", "by", title=f"{alias} history")
    with db.read() as session:
        for row in repo.history(session, alias):
            table.add_row(
                row.version,
                row.started_at.isoformat(timespec="seconds"),
                row.ended_at.isoformat(timespec="seconds") if row.ended_at else "(serving)",
                row.reason,
                row.by,
            )
    Console(width=160).print(table)


@app.command("reclassify")
def reclassify(
    advertiser: Annotated[
        str | None, typer.Option(help="Only this advertiser (it must have opted in).")
    ] = None,
    by: ByOpt = None,
) -> None:
    """Re-classify opted-in advertisers' images with the production model (fixes untouched).

    It also finishes a re-classification of that model cut off part-way (a server
    stopped: `cartag models list` reports it), skipping the images already done.
    """
    settings = load_settings()
    try:
        if advertiser is not None:
            check_advertiser_id(advertiser, "--advertiser")
        db = _registry(settings)
    except CartagError as exc:
        raise fail(exc) from exc
    _reclassify(settings, db, advertiser, by=_user(by), quiet_if_none=False)


def _reclassify(
    settings: Settings, db: Database, advertiser: str | None, *, by: str, quiet_if_none: bool
) -> None:
    from cartag.clock import SystemClock
    from cartag.deploy.followup import advertisers_to_run
    from cartag.deploy.hotswap import load_production
    from cartag.jobs.reclassify import reclassify as run
    from cartag.net.fetch import Fetcher

    try:
        advertisers = advertisers_to_run(db, advertiser)
        if not advertisers:
            if not quiet_if_none:
                err.print("no advertiser opted in; see `cartag advertisers set --help`")
            return
        model = load_production(db, settings)
        if model is None:
            err.print("[red]error:[/red] the production model cannot be loaded; see the log")
            raise typer.Exit(2)

        async def main() -> ReclassifyReport:
            fetcher = Fetcher(settings)
            try:
                return await run(
                    db,
                    settings,
                    model,
                    fetcher,
                    SystemClock(),
                    advertiser_id=advertiser,
                    requested_by=by,
                )
            finally:
                await fetcher.aclose()

        report = asyncio.run(main())
    except CartagError as exc:
        raise fail(exc) from exc
    except KeyboardInterrupt:
        # Ctrl-C after a promotion used to end the command without a word: the alias had
        # moved, and part of the images silently kept the previous model's answers.
        command = "cartag models reclassify" + (f" --advertiser {advertiser}" if advertiser else "")
        err.print(
            f"[red]interrupted:[/red] re-classification for {', '.join(advertisers)} stopped "
            "part-way: the images it had not reached keep the previous model's answers "
            f"(the production alias stays where it is); `{command}` finishes it (images "
            "already done are skipped)"
        )
        raise typer.Exit(130) from None
    err.print(
        f"re-classified with {report.model_version} for {', '.join(report.advertisers)}: "
        f"{report.images} images, {report.from_cache} from cached embeddings, "
        f"{report.downloaded} downloaded, {report.failed} failed, {report.current} already "
        f"current, {report.changed} changed answers (manual fixes still apply)"
    )


# The build commands come after the registry's in `cartag models --help`.
model_build.register(app)
