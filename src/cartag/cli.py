"""The ``cartag`` command line (Typer). It only translates; the work lives elsewhere."""

from __future__ import annotations

import json
import re
import sys
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from cartag.commands import dataset
from cartag.commands.advertisers import app as advertisers_app
from cartag.commands.callbacks import app as callbacks_app
from cartag.commands.common import (
    check_output,
    err,
    fail,
    load_settings,
    open_database,
    replace_file,
    unreachable_database,
    unusable_database,
)
from cartag.commands.jobs import app as jobs_app
from cartag.commands.keys import app as keys_app
from cartag.commands.models import app as models_app
from cartag.commands.monitor import app as monitor_app
from cartag.commands.train import app as train_app
from cartag.commands.worker import app as worker_app
from cartag.errors import CartagError, InputError
from cartag.vocab import check_advertiser_id

if TYPE_CHECKING:
    from fastapi import FastAPI

    from cartag.models.classifier import Classifier
    from cartag.settings import Settings
    from cartag.training.evaluation.evaluate import Evaluation

app = typer.Typer(
    help="cartag: tag vehicle-listing photos with type and color.", no_args_is_help=True
)
db_app = typer.Typer(help="Database migrations.", no_args_is_help=True)


def _print_version(value: bool) -> None:
    if value:
        from cartag import __version__

        typer.echo(f"cartag {__version__}")
        raise typer.Exit()


@app.callback()
def cartag_options(
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_print_version, is_eager=True, help="Print the version and exit."
        ),
    ] = False,
) -> None:
    """cartag: tag vehicle-listing photos with type and color."""


app.add_typer(keys_app, name="keys")
app.add_typer(db_app, name="db")
app.add_typer(models_app, name="models")
app.add_typer(advertisers_app, name="advertisers")
app.add_typer(worker_app, name="worker")
app.add_typer(dataset.app, name="dataset")
app.add_typer(train_app, name="train")
app.add_typer(monitor_app, name="monitor")
app.add_typer(callbacks_app, name="callbacks")
app.add_typer(jobs_app, name="jobs")


def _check_listen(host: str, port: int) -> None:
    """Refuse, before the store and the model load, an address uvicorn could not bind.

    Raises:
        InputError: ``--host`` is no address of this machine, or ``--port`` is in use.
    """
    import errno
    import socket

    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except (socket.gaierror, UnicodeError) as exc:
        raise InputError(
            f"--host {host!r} is not an address ({exc}); use e.g. 127.0.0.1 or 0.0.0.0",
            field="host",
        ) from None
    family, kind, proto, _, address = infos[0]
    with socket.socket(family, kind, proto) as probe:
        # As uvicorn binds: a port left in TIME_WAIT by a stopped server is free.
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(address)
        except OSError as exc:
            if exc.errno == errno.EADDRNOTAVAIL:
                raise InputError(
                    f"--host {host} is not an address of this machine; use e.g. 127.0.0.1 "
                    "or 0.0.0.0",
                    field="host",
                ) from None
            raise InputError(
                f"cannot listen on {host}:{port} ({exc.strerror}): stop what listens there, "
                "or pick another --port",
                field="port",
            ) from None


@app.command()
def serve(
    host: Annotated[str, typer.Option(help="Interface to bind.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=0, max=65535, help="TCP port (0: any free one).")] = 8000,
    log_level: Annotated[str, typer.Option(help="uvicorn log level.")] = "info",
    workers: Annotated[
        int | None,
        typer.Option(
            min=1,
            max=64,
            help="Serving processes (default CARTAG_SERVE_PROCESSES, 1); each loads the "
            "model and takes its share of the cores. See README, 'Serving processes'.",
        ),
    ] = None,
) -> None:
    """Run the HTTP API (embedded SQLite + in-process worker unless configured otherwise)."""
    import os

    import uvicorn

    from cartag.api.app import create_app
    from cartag.store.health import check_store

    try:
        _check_listen(host, port)
    except CartagError as exc:
        raise fail(exc) from exc
    settings = load_settings()
    if workers is not None and workers != settings.serve_processes:
        # The processes uvicorn starts read their settings from the environment.
        os.environ["CARTAG_SERVE_PROCESSES"] = str(workers)
        settings = load_settings()
    try:
        # A read-only or full data dir or database, or a model folder that cannot be
        # read: say so and how to fix it, rather than a traceback from deep inside the
        # startup (in a JSON log line, with exit 3).
        check_store(settings, migrate=settings.auto_migrate)
        if settings.model_dir is not None:
            from cartag.models.folder import read_config

            read_config(settings.model_dir)
        _prepare_process(settings, log_level)
        if settings.serve_processes > 1:
            os.environ[_LOG_LEVEL_VARIABLE] = log_level
            # Each process builds its app (serving_app) after the fork-free start.
            target: object = "cartag.cli:serving_app"
        else:
            target = create_app(settings, freeze_gc=True)
    except CartagError as exc:
        raise fail(exc) from exc
    # Logging is configured above (CARTAG_LOG_FORMAT); the app's middleware writes the
    # access log, with the request id, so uvicorn's own is off.
    uvicorn.run(
        target,  # type: ignore[arg-type]
        host=host,
        port=port,
        log_level=log_level,
        log_config=None,
        access_log=False,
        workers=settings.serve_processes,
        factory=settings.serve_processes > 1,
    )


# How `cartag serve --workers N` tells its processes the log level it was given.
_LOG_LEVEL_VARIABLE = "_CARTAG_SERVE_LOG_LEVEL"


def _prepare_process(settings: Settings, log_level: str) -> None:
    from cartag.blas import limit_blas_threads
    from cartag.logs import configure_logging
    from cartag.memory import limit_malloc_arenas

    limit_malloc_arenas(settings.malloc_arenas)  # before the model's threads start
    limit_blas_threads(settings.blas_threads)
    configure_logging(settings.log_format, log_level)


def serving_app() -> FastAPI:
    """The app of one process of ``cartag serve --workers N`` (uvicorn's factory).

    The parent checked the settings and the store; each process loads the model and
    runs its own micro-batcher, job worker and metrics (``/metrics`` shows the
    process that answers; see README).
    """
    import os

    from cartag.api.app import create_app
    from cartag.settings import get_settings

    settings = get_settings()
    _prepare_process(settings, os.environ.get(_LOG_LEVEL_VARIABLE, "info"))
    return create_app(settings, freeze_gc=True)


@app.command()
def predict(
    paths: Annotated[list[Path], typer.Argument(help="Image files or folders (recursive).")],
    jsonl: Annotated[bool, typer.Option("--jsonl", help="One JSON object per line.")] = False,
    batch_size: Annotated[int, typer.Option(min=1, help="Images per model call.")] = 32,
) -> None:
    """Classify image files with the bundled (or CARTAG_MODEL_DIR) model."""
    from cartag.imaging.files import find_images
    from cartag.models.classifier import load_classifier
    from cartag.models.files import predict_files

    settings = load_settings()
    try:
        files = find_images(paths)
        classifier = load_classifier(settings)
    except CartagError as exc:
        raise fail(exc) from exc
    _print_model(classifier, settings)
    counts: Counter[str] = Counter()
    skipped: list[tuple[str, str]] = []
    table = Table("path", "type", "color", "confidence")
    with Progress(console=err, transient=True, disable=len(files) < 20) as progress:
        task = progress.add_task("classifying", total=len(files))
        for record in predict_files(
            classifier,
            files,
            max_pixels=settings.max_image_pixels,
            batch_size=batch_size,
            low_confidence_threshold=settings.low_confidence_threshold,
        ):
            progress.advance(task)
            counts[record["image_type"] or "not read"] += 1
            if not record["image_type"]:
                skipped.append((record["path"], str(record.get("error"))))
            if jsonl:
                # Each record names its model, as an API answer does: a file of records
                # outlives the terminal that said which model made them.
                sys.stdout.write(json.dumps({**record, "model_version": classifier.version}) + "\n")
            else:
                table.add_row(
                    record["path"],
                    record["image_type"] or f"error: {record.get('error')}",
                    record["color"] or "-",
                    f"{record.get('confidence', 0):.3f}" if record["image_type"] else "-",
                )
    if not jsonl:
        Console().print(table)
    err.print(", ".join(f"{k}: {v}" for k, v in sorted(counts.items())))
    if skipped:
        err.print(f"skipped {len(skipped)} of {len(files)} file(s):")
        for path, reason in skipped:
            err.print(f"  {path}: {reason}")
    if files and len(skipped) == len(files):
        err.print("[red]error:[/red] no file could be classified")
        raise typer.Exit(1)


def _print_model(classifier: Classifier, settings: Settings) -> None:
    """Say on standard error which model answers and where it came from.

    ``predict`` and ``evaluate`` load the bundled model or ``CARTAG_MODEL_DIR``, never the
    registry's production: a console run named neither, so its figures could be taken
    for production's.
    """
    from cartag.models.classifier import BUNDLED_DIR

    if settings.model_dir is None:
        origin = f"the bundled model, {BUNDLED_DIR}"
    else:
        origin = f"CARTAG_MODEL_DIR={settings.model_dir}"
    err.print(
        f"model: {classifier.version} ({origin}; not the registry's production: set "
        "CARTAG_MODEL_DIR to a model folder to use another)",
        markup=False,
        highlight=False,
    )


@app.command("classify-files")
def classify_files(
    paths: Annotated[list[Path], typer.Argument(help="Image files or folders (recursive).")],
    advertiser: Annotated[
        str, typer.Option("--advertiser", help="Whose fixes and settings apply.")
    ] = "demo",
    jsonl: Annotated[bool, typer.Option("--jsonl", help="One JSON result per line.")] = False,
) -> None:
    """Classify local image files through the service's pipeline, cache and fixes.

    Needs no image server: the answers are stored like those of POST /v1/classify
    (keyed by content), so they show on /fix and /monitor of `cartag serve` on the
    same CARTAG_DATA_DIR / CARTAG_DATABASE_URL.
    """
    import asyncio

    from cartag.imaging.files import find_images
    from cartag.imaging.keys import content_sha256
    from cartag.pipeline.thumbnails import ThumbnailSource, keep_thumbnail
    from cartag.runtime import start_runtime
    from cartag.store.blobs import blob_store

    settings = load_settings()
    try:
        check_advertiser_id(advertiser, "--advertiser")
        files = find_images(paths)
    except CartagError as exc:
        raise fail(exc) from exc
    db = open_database(settings)
    contents: list[tuple[str, bytes]] = []
    unread: dict[str, str] = {}
    for path in files:
        name = path.resolve().as_uri()
        try:
            if path.stat().st_size > settings.max_image_bytes:
                unread[name] = "too_large"
                continue
            contents.append((name, path.read_bytes()))
        except OSError as exc:
            unread[name] = f"unreadable ({exc.strerror or exc})"

    async def run() -> list[dict[str, object]]:
        runtime = await start_runtime(settings, db, owned=frozenset({"db"}))
        try:
            results = await runtime.service.classify_contents(advertiser, contents)
            runtime.service.flush_rollup()
        finally:
            await runtime.aclose()
        return [result.to_dict() for result in results]

    def keep_thumbnails(answers: dict[str, dict[str, object]]) -> None:
        # The fix page's previews: a local file cannot be downloaded again later.
        blobs = blob_store(settings)
        for name, data in contents:
            answer = answers.get(name, {})
            if answer.get("image_key") is not None:
                source = ThumbnailSource(str(answer["image_key"]), name, content_sha256(data))
                keep_thumbnail(
                    source,
                    data,
                    blobs,
                    max_pixels=settings.max_image_pixels,
                    max_decode_bytes=settings.max_decode_mb * 1024 * 1024,
                )

    try:
        answers = {str(r["url"]): r for r in asyncio.run(run())} if contents else {}
        keep_thumbnails(answers)
    except CartagError as exc:
        raise fail(exc) from exc
    table = Table("file", "type", "color", "source", "confidence")
    table.columns[0].overflow = "fold"
    skipped: list[tuple[str, str]] = []
    for path in files:
        name = path.resolve().as_uri()
        answer = answers.get(name) or {"url": name, "status": "skipped", "reason": unread[name]}
        if answer["status"] == "skipped":
            skipped.append((str(path), str(answer["reason"])))
        if jsonl:
            sys.stdout.write(json.dumps({"path": str(path), **answer}) + "\n")
            continue
        confidence = answer.get("confidence")
        table.add_row(
            str(path),
            str(answer.get("image_type") or f"skipped: {answer.get('reason')}"),
            str(answer.get("color") or "-"),
            str(answer.get("source") or "-"),
            f"{confidence:.3f}" if isinstance(confidence, float) else "-",
        )
    if not jsonl:
        Console().print(table)
    err.print(f"{len(files) - len(skipped)} of {len(files)} classified for advertiser {advertiser}")
    for path_text, reason in skipped:
        err.print(f"  skipped {path_text}: {reason}")
    if len(skipped) == len(files):
        err.print("[red]error:[/red] no file could be classified")
        raise typer.Exit(1)


@app.command("evaluate")
def evaluate_command(
    path: Annotated[Path, typer.Argument(help="Folder of labelled images.")],
    labels: Annotated[
        Path | None,
        typer.Option("--labels", help="CSV with a path column plus image_type and/or color."),
    ] = None,
    folders: Annotated[
        bool, typer.Option("--folders", help="Each image's folder name is its label.")
    ] = False,
    report: Annotated[Path, typer.Option(help="HTML report to write.")] = Path(
        "evaluation-report.html"
    ),
    json_path: Annotated[
        Path | None, typer.Option("--json", help="Also write every metric and mistake as JSON.")
    ] = None,
    batch_size: Annotated[int, typer.Option(min=1, help="Images per model call.")] = 32,
    limit: Annotated[
        int | None, typer.Option(min=1, help="At most N images, spread evenly over the set.")
    ] = None,
    mistakes: Annotated[
        int, typer.Option(min=0, help="Worst mistakes shown per task in the report.")
    ] = 24,
) -> None:
    """Measure the model on labelled images: metrics, confusion matrices, HTML report."""
    from cartag.models.classifier import load_classifier
    from cartag.training.evaluation.evaluate import evaluate, labels_from_csv, labels_from_folders
    from cartag.web.report import write_report

    if (labels is None) == (not folders):
        err.print("[red]error:[/red] give exactly one of --labels CSV or --folders")
        raise typer.Exit(2)
    settings = load_settings()
    try:
        if not path.exists():
            raise InputError(f"{path} does not exist", field="path")
        inputs = [path] if labels is None else [path, labels]
        check_output(report, "--report", settings, inputs)
        if json_path is not None:
            check_output(json_path, "--json", settings, inputs)
        if labels is not None:
            if labels.is_dir():
                raise InputError(f"--labels {labels} is a folder: give the CSV file", "labels")
            if not labels.is_file():
                raise InputError(f"labels file {labels} does not exist", field="labels")
            truth = labels_from_csv(labels, path).limited(limit)
        else:
            truth = labels_from_folders(path).limited(limit)
        truth.require_images()  # before the model takes seconds to load
        classifier = load_classifier(settings)
        _print_model(classifier, settings)
        with Progress(console=err, transient=True, disable=len(truth.images) < 20) as progress:
            task = progress.add_task("evaluating", total=len(truth.images))
            result = evaluate(
                classifier,
                truth,
                max_pixels=settings.max_image_pixels,
                batch_size=batch_size,
                on_record=lambda: progress.advance(task),
            )
    except CartagError as exc:
        raise fail(exc) from exc
    _print_evaluation(result)
    source = f"{path}" + (f" · labels {labels}" if labels is not None else " · folder labels")
    try:
        write_report(
            result,
            report,
            source=source,
            max_mistakes=mistakes,
            max_pixels=settings.max_image_pixels,
        )
        if json_path is not None:
            replace_file(json_path, json.dumps(result.to_json(), indent=2) + "\n")
    except OSError as exc:
        err.print(f"[red]error:[/red] cannot write {exc.filename}: {exc.strerror}")
        raise typer.Exit(2) from exc
    err.print(f"report: {report}" + (f", metrics: {json_path}" if json_path else ""))


def _print_evaluation(result: Evaluation) -> None:
    out = Console(soft_wrap=True)
    for name, task in result.tasks.items():
        r = task.report
        out.print(
            f"[bold]{name}[/bold]: accuracy {r['accuracy']:.3f}, top-2 accuracy "
            f"{r['top2_accuracy']:.3f}, macro recall {r['macro_recall']:.3f} ({r['n']} images, "
            f"{len(task.mistakes)} mistakes)"
        )
        if name == "color" and task.colorless:
            out.print(f"  {task.colorless} typed Placeholder (the service answers no color)")
        per_class = Table("class", title=f"{name} per class")
        for column in ("precision", "recall", "support"):
            per_class.add_column(column, justify="right")
        for label, row in r["per_class"].items():
            per_class.add_row(
                label,
                *("-" if row[k] is None else f"{row[k]:.3f}" for k in ("precision", "recall")),
                str(row["support"]),
            )
        out.print(per_class)
        names = r["confusion"]["labels"]
        matrix = Table("true", title=f"{name} confusion matrix (rows true, columns predicted)")
        for label in names:
            matrix.add_column(label, justify="right")
        for label, counts in zip(names, r["confusion"]["rows_true_cols_pred"], strict=True):
            matrix.add_row(label, *(str(c) if c else "." for c in counts))
        out.print(matrix)
    if result.by_source:  # the labels CSV has a source column
        from cartag.training.evaluation.by_source import source_tables

        out.print(source_tables(result.by_source))
    skipped = [
        f"{len(result.unreadable)} unreadable" if result.unreadable else "",
        f"{len(result.missing)} missing" if result.missing else "",
        f"{result.unlabelled} without a label" if result.unlabelled else "",
    ]
    if any(skipped):
        err.print("[yellow]not evaluated:[/yellow] " + ", ".join(s for s in skipped if s))


@db_app.command("check")
def db_check() -> None:
    """Check that the data dir and the database take writes (what `cartag serve` checks first)."""
    from cartag.store.health import check_store

    settings = load_settings()
    try:
        check_store(settings, migrate=False)
    except CartagError as exc:
        raise fail(exc) from exc
    err.print(f"data dir {settings.data_dir} and the database take writes")


@db_app.command("upgrade")
def db_upgrade(
    revision: Annotated[str, typer.Argument(help="Target revision.")] = "head",
) -> None:
    """Apply migrations to CARTAG_DATABASE_URL (default: SQLite in CARTAG_DATA_DIR)."""
    from sqlalchemy.exc import DatabaseError, OperationalError

    from cartag.redaction import strip_password
    from cartag.store.db import Database, current_revision, revisions, upgrade

    known = revisions()
    if revision not in ("head", "heads", *known) and not re.fullmatch(r"\+[0-9]{1,3}", revision):
        # Checked before the database is opened: a fresh data dir is left as it was.
        raise fail(
            InputError(
                f"{revision!r} is not a revision: give head, +N (N steps up) or one of "
                f"{', '.join(known)}",
                field="revision",
            )
        )
    settings = load_settings()
    try:
        db = Database(settings.resolved_database_url)
    except CartagError as exc:
        raise fail(exc) from exc
    try:
        upgrade(db, revision)
    except CartagError as exc:
        raise fail(exc) from exc
    except OperationalError as exc:
        raise unreachable_database(settings, exc) from exc
    except DatabaseError as exc:
        raise unusable_database(settings, exc) from exc
    except Exception as exc:  # noqa: BLE001 - e.g. a migration that fails on this data
        reason = str(exc).strip() or type(exc).__name__
        err.print(
            f"[red]error:[/red] could not migrate {strip_password(db.url)} to {revision!r}: "
            f"{reason} (give head, or a revision of the migrations in cartag/store/migrations)"
        )
        raise typer.Exit(2) from exc
    err.print(f"database at revision {current_revision(db)}")


def main() -> None:
    """The ``cartag`` command (the console script).

    Each command reports the errors it expects in one line; what one still lets through
    from the store, the file system or the settings is reported here the same way
    (exit 2), never as a traceback.
    """
    from sqlalchemy.exc import SQLAlchemyError

    from cartag.store.health import driver_message

    try:
        app()
    except CartagError as exc:
        err.print(f"[red]error:[/red] {exc.message}")
        raise SystemExit(2) from None
    except SQLAlchemyError as exc:
        err.print(
            f"[red]error:[/red] the database failed: {driver_message(exc)}; check "
            "CARTAG_DATABASE_URL (or CARTAG_DATA_DIR and its cartag.db)"
        )
        raise SystemExit(2) from None
    except UnicodeDecodeError as exc:
        err.print(f"[red]error:[/red] a file that should be UTF-8 text is not ({exc.reason})")
        raise SystemExit(2) from None
    except OSError as exc:
        where = f": {exc.filename}" if exc.filename else ""
        err.print(f"[red]error:[/red] {exc.strerror or exc}{where}")
        raise SystemExit(2) from None


if __name__ == "__main__":
    main()
