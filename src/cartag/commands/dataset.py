"""``cartag dataset``: versioned training datasets (import, extend with fixes, freeze, export).

Only translation lives here; the work is in :mod:`cartag.training.datasets.dataset_build`
and :mod:`cartag.store.datasets`.
"""

from __future__ import annotations

import datetime as dt
import json
import math
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn
from rich.table import Table

from cartag.commands.common import (
    check_output,
    err,
    fail,
    load_settings,
    open_database,
    replace_file,
)
from cartag.errors import CartagError, InputError
from cartag.settings import Settings

if TYPE_CHECKING:
    from cartag.training.datasets.dataset_inputs import BuildOptions

app = typer.Typer(
    help="Versioned training datasets: import, extend with fixes, review stats, freeze, export.",
    no_args_is_help=True,
)
out = Console(soft_wrap=True)

_FILTER_HELP = {
    "duplicate": "same bytes as another image (merged)",
    "unreadable": "not a decodable image",
    "too_small": "shorter side below CARTAG_DATASET_MIN_SIDE",
    "near_duplicate": "pHash within CARTAG_DATASET_NEAR_DUPLICATE_DISTANCE of a kept image",
    "conflict": "same/near-duplicate image with disagreeing labels: flagged for review",
    "relabelled": "a global fix corrected the parent's label",
}


class _RichProgress:
    """BuildProgress drawn as rich bars on stderr (one bar per stage)."""

    def __init__(self, progress: Progress) -> None:
        self._progress = progress
        self._task: TaskID | None = None

    def begin(self, stage: str, total: int) -> None:
        if self._task is not None:
            self._progress.update(self._task, visible=False)
        self._task = self._progress.add_task(stage, total=total)

    def advance(self, n: int = 1) -> None:
        if self._task is not None:
            self._progress.advance(self._task, n)


def _builder(settings: Settings, db: Any, progress: _RichProgress, rank: bool) -> Any:
    from cartag.store.blobs import blob_store
    from cartag.training.datasets.dataset_build import DatasetBuilder

    embedder = None
    if rank:
        from cartag.models.backbone import Backbone
        from cartag.models.classifier import BUNDLED_DIR, backbone_spec

        spec = backbone_spec(settings.model_dir or BUNDLED_DIR)
        embedder = Backbone.load(
            spec.variant,
            threads=settings.torch_threads,
            engine=settings.engine,
            cache_dir=settings.resolved_cache_dir,
            weights=spec.weights,
        )
    return DatasetBuilder(
        settings,
        db,
        blob_store(settings),
        embedder=embedder,
        progress=progress,  # type: ignore[arg-type]
    )


def _run_build(settings: Settings, rank: bool, build: Any) -> None:
    db = open_database(settings)
    try:
        with Progress(
            TextColumn("{task.description:>10}"),
            BarColumn(),
            MofNCompleteColumn(),
            console=err,
            transient=True,
        ) as bars:
            report = build(_builder(settings, db, _RichProgress(bars), rank))
    except CartagError as exc:
        raise fail(exc) from exc
    finally:
        db.dispose()
    out.print(f"created [bold]{report.ref}[/bold] (draft)")
    _print_stats(report.stats, top=10)
    imported = report.stats.get("import") or {}
    if imported.get("label_rows_without_file"):
        # Said, not only counted: a CSV whose paths are all wrong gives an unlabelled set.
        err.print(
            f"[yellow]warning:[/yellow] {imported['label_rows_without_file']} row(s) of "
            f"{', '.join(imported.get('labels', []))} name no image under "
            f"{imported.get('folder')} and were ignored (paths are relative to --folder)"
        )
    err.print(
        f"next: review it, then `cartag dataset freeze {report.ref}`; "
        f"`cartag dataset show {report.ref}` prints this again"
    )


# Options shared by `import` and `create`.
_TestSets = Annotated[
    list[str] | None, typer.Option("--test-set", help="advertiser=ID; repeatable.")
]
_Crop = Annotated[str | None, typer.Option(help="letterbox or none (default CARTAG_DATASET_CROP).")]
_Rank = Annotated[
    bool, typer.Option("--rank/--no-rank", help="Rank label issues (runs the backbone).")
]
_Placeholders = Annotated[
    int,
    typer.Option(
        min=0,
        help="Add this many generated Placeholder cards (real photo folders have none; "
        "a model trained without them never predicts Placeholder).",
    ),
]
_PlaceholderSeed = Annotated[
    int, typer.Option(help="Seed of the generated cards (same seed, same images).")
]
_User = Annotated[str, typer.Option(help="Recorded as the creator.")]


def _build_options(
    name: str,
    user: str,
    test_set: list[str] | None,
    crop: str | None,
    rank: bool,
    placeholders: int,
    placeholder_seed: int,
) -> BuildOptions:
    """The options of a build, checked (InputError names the bad one)."""
    from cartag.training.datasets.dataset_inputs import BuildOptions, parse_test_set

    options = BuildOptions(
        name=name,
        user=user,
        test_advertisers=[parse_test_set(v) for v in test_set or []],
        crop=crop,
        rank=rank,
        placeholders=placeholders,
        placeholder_seed=placeholder_seed,
    )
    _check_crop(crop)
    return options


@app.command("import")
def import_command(
    name: Annotated[str, typer.Argument(help="Dataset name, e.g. cars.")],
    folder: Annotated[Path, typer.Option("--folder", help="Folder of images (recursive).")],
    labels: Annotated[
        list[Path] | None,
        typer.Option(
            "--labels",
            help="CSV with path + image_type/type and/or color (+ listing_id); repeatable. "
            "Folder names that are a type or color label the images first.",
        ),
    ] = None,
    test_set: _TestSets = None,
    crop: _Crop = None,
    rank: _Rank = True,
    placeholders: _Placeholders = 0,
    placeholder_seed: _PlaceholderSeed = 0,
    user: _User = "cli",
) -> None:
    """Create the first version of a dataset from a folder of images."""

    settings = load_settings()
    try:
        options = _build_options(name, user, test_set, crop, rank, placeholders, placeholder_seed)
    except CartagError as exc:
        raise fail(exc) from exc
    _run_build(settings, rank, lambda b: b.import_folder(options, folder, labels or []))


@app.command("create")
def create_command(
    name: Annotated[str, typer.Argument(help="Dataset name (usually the parent's).")],
    from_ref: Annotated[str, typer.Option("--from", help="Frozen parent version, e.g. cars@1.")],
    add_fixes_since: Annotated[
        str | None,
        typer.Option(
            "--add-fixes-since",
            help="last-retrain (when the production model's data was made) or a date "
            "(2026-11-30); without it no fixes are added.",
        ),
    ] = None,
    test_set: _TestSets = None,
    crop: _Crop = None,
    rank: _Rank = True,
    placeholders: _Placeholders = 0,
    placeholder_seed: _PlaceholderSeed = 0,
    candidates: Annotated[
        list[str] | None,
        typer.Option(
            "--candidates",
            help="Also propose images for review, labelled with the model's answer and "
            "flagged: fix-rate-jump (unfixed images of advertisers whose fix rate jumped, "
            "lowest confidence first) or far-from-training (images whose novelty exceeds "
            "the production model's far threshold, farthest first); repeatable.",
        ),
    ] = None,
    candidate_limit: Annotated[
        int | None,
        typer.Option(
            min=1, help="Most images per candidate kind (default CARTAG_DATASET_CANDIDATE_LIMIT)."
        ),
    ] = None,
    candidate_days: Annotated[
        int | None,
        typer.Option(
            min=1,
            max=90,
            help="Recent window in days, today included: the fix rate judged and the images "
            "seen (default CARTAG_DATASET_CANDIDATE_RECENT_DAYS).",
        ),
    ] = None,
    far_threshold: Annotated[
        float | None,
        typer.Option(
            min=0.0,
            help="Novelty above which an image is far from the training data (default: the "
            "production model's config.json reference far_threshold).",
        ),
    ] = None,
    user: _User = "cli",
) -> None:
    """Extend a frozen version with the manual fixes made since a cutoff (and candidates)."""
    from cartag.training.datasets.candidates import CandidateRequest, parse_kinds
    from cartag.training.datasets.dataset_inputs import parse_cutoff
    from cartag.training.datasets.fix_rate_jumps import JumpRule

    settings = load_settings()
    try:
        cutoff = parse_cutoff(add_fixes_since) if add_fixes_since is not None else None
        if isinstance(cutoff, dt.datetime) and cutoff > dt.datetime.now(dt.UTC):
            raise InputError(
                f"--add-fixes-since {add_fixes_since} is in the future: no fix is made after "
                "it; give a past date or last-retrain",
                field="add_fixes_since",
            )
        kinds = parse_kinds(candidates or [])
        _check_candidate_options(kinds, candidate_limit, candidate_days, far_threshold)
        options = _build_options(name, user, test_set, crop, rank, placeholders, placeholder_seed)
        request = CandidateRequest(
            kinds=kinds,
            limit=candidate_limit or settings.dataset_candidate_limit,
            rule=JumpRule.from_settings(settings, candidate_days),
            far_threshold=far_threshold,
            threshold_source="--far-threshold" if far_threshold is not None else None,
        )
    except CartagError as exc:
        raise fail(exc) from exc

    def build(builder: Any) -> Any:
        wanted = _with_far_threshold(settings, builder.db, request)
        return builder.create(options, parent_ref=from_ref, fixes_since=cutoff, candidates=wanted)

    _run_build(settings, rank, build)


def _check_candidate_options(
    kinds: tuple[str, ...], limit: int | None, days: int | None, far: float | None
) -> None:
    """Refuse candidate options that would do nothing (silently ignored, they mislead).

    Raises:
        InputError: Naming the option and what it needs.
    """
    from cartag.training.datasets.candidates import FAR_FROM_TRAINING, FIX_RATE_JUMP

    if not kinds:
        for option, value in (
            ("--candidate-limit", limit),
            ("--candidate-days", days),
            ("--far-threshold", far),
        ):
            if value is not None:
                raise InputError(
                    f"{option} is for candidates: add --candidates {FIX_RATE_JUMP} and/or "
                    f"--candidates {FAR_FROM_TRAINING}",
                    field=option.lstrip("-").replace("-", "_"),
                )
    if far is not None:
        if FAR_FROM_TRAINING not in kinds:
            raise InputError(
                f"--far-threshold is for --candidates {FAR_FROM_TRAINING}, not asked for",
                field="far_threshold",
            )
        if not math.isfinite(far):
            raise InputError(
                "--far-threshold must be a finite novelty (a cosine distance, 0 to 2)",
                field="far_threshold",
            )


def _with_far_threshold(settings: Settings, db: Any, request: Any) -> Any:
    """The request with the serving model's far threshold, when it needs one and has none.

    The serving model is the production alias's folder, else ``CARTAG_MODEL_DIR`` or the
    bundled model (what ``cartag serve`` loads).
    """
    from dataclasses import replace

    from cartag.deploy.loadcheck import version_dir
    from cartag.models.classifier import BUNDLED_DIR
    from cartag.store import model_versions
    from cartag.training.datasets.candidates import FAR_FROM_TRAINING, read_far_threshold

    if FAR_FROM_TRAINING not in request.kinds or request.far_threshold is not None:
        return request
    with db.read() as session:
        row = model_versions.get_alias(session, "production")
        folder = version_dir(settings, row) if row is not None else None
        label = f"production {row.version}" if row is not None else "serving model"
    folder = folder or settings.model_dir or BUNDLED_DIR
    return replace(
        request,
        far_threshold=read_far_threshold(folder),
        threshold_source=f"{folder / 'config.json'} ({label})",
    )


def _check_crop(crop: str | None) -> None:
    from cartag.errors import InputError
    from cartag.training.datasets.crop import CROPPERS

    if crop is not None and crop not in CROPPERS:
        raise InputError(f"--crop {crop!r}: use one of {', '.join(CROPPERS)}", field="crop")


@app.command("list")
def list_command(
    name: Annotated[str | None, typer.Argument(help="Only this dataset.")] = None,
) -> None:
    """List dataset versions with their item counts."""
    from cartag.store import datasets as repo

    settings = load_settings()
    db = open_database(settings)
    try:
        with db.read() as session:
            versions = repo.list_versions(session, name)
            counts = repo.item_counts(session, [v.ref for v in versions])
            # Only to say which names there are, when the one asked for has none.
            others = (
                sorted({v.name for v in repo.list_versions(session, None)})
                if not versions and name is not None
                else []
            )
    except CartagError as exc:
        raise fail(exc) from exc
    finally:
        db.dispose()
    table = Table("ref", "status", "parent", "created", "included", "flagged", "excluded")
    for v in versions:
        c = counts.get(v.ref, {})
        table.add_row(
            v.ref,
            v.status,
            v.parent_ref or "-",
            v.created_at.strftime("%Y-%m-%d %H:%M"),
            str(c.get("included", 0)),
            str(c.get("flagged", 0)),
            str(c.get("excluded", 0)),
        )
    out.print(table)
    if others:
        err.print(f"no dataset named {name!r}; there are: {', '.join(others)}")
    elif not versions:
        err.print("no dataset versions yet: `cartag dataset import NAME --folder PATH`")


@app.command("show")
def show_command(
    ref: Annotated[str, typer.Argument(help="NAME@N, or NAME for its latest version.")],
    top: Annotated[int, typer.Option(min=0, help="Most suspicious items to list.")] = 15,
    as_json: Annotated[bool, typer.Option("--json", help="Print the stats as JSON.")] = False,
) -> None:
    """Stats of a version: filter counts, split, class balance, most suspicious labels."""
    from cartag.store import datasets as repo

    settings = load_settings()
    db = open_database(settings)
    try:
        with db.read() as session:
            version = repo.get_version(session, ref)
            counts = repo.item_counts(session, [version.ref])[version.ref]
    except CartagError as exc:
        raise fail(exc) from exc
    finally:
        db.dispose()
    if as_json:
        payload = {
            "ref": version.ref,
            "status": version.status,
            "parent": version.parent_ref,
            "manifest_sha256": version.manifest_sha256,
            "items": counts,
            "test_sets": version.test_sets,
            "stats": version.stats,
        }
        out.print_json(json.dumps(payload))
        return
    out.print(
        f"[bold]{version.ref}[/bold] {version.status}"
        + (f", from {version.parent_ref}" if version.parent_ref else "")
        + f", created {version.created_at:%Y-%m-%d %H:%M} by {version.created_by}"
        + (f", manifest sha256 {version.manifest_sha256}" if version.manifest_sha256 else "")
    )
    out.print("items: " + ", ".join(f"{k} {v}" for k, v in sorted(counts.items())))
    if version.test_sets:
        out.print("test sets: " + ", ".join(str(t.get("name")) for t in version.test_sets))
    _print_stats(version.stats, top=top)


def _print_stats(stats: dict[str, Any], *, top: int) -> None:
    downloads = stats.get("downloads")
    since = stats.get("fixes", {}).get("since")
    if downloads and since is None:
        out.print("no fixes added (no --add-fixes-since)")
    elif downloads:
        out.print(
            f"fixes since {since}: {stats['fixes']['fixes']} fixes "
            f"of {downloads['images']} images; download failed {downloads['failed']}, "
            f"image changed since the fix {downloads['changed_since_fix']}, "
            f"color not carried {downloads.get('color_not_carried', 0)}"
        )
    _print_candidates(stats.get("candidates"))
    filters = stats.get("filters", {})
    if filters:
        table = Table("filter", "count", "meaning", title="filters")
        for key, value in filters.items():
            table.add_row(key, str(value), _FILTER_HELP.get(key, ""))
        out.print(table)
    generated = stats.get("placeholders")
    if generated:
        out.print(
            f"generated {generated['generated']} placeholder cards (seed {generated['seed']}, "
            "cartag.imaging.placeholders)"
        )
    if "added" in stats:
        crop = stats.get("crop", {})
        out.print(
            f"added {stats['added']} new images, kept {stats.get('copied', 0)} from the parent; "
            f"crop {crop.get('method')}: {crop.get('cropped', 0)} cropped"
        )
    split = stats.get("split", {})
    if split:
        out.print(
            "split: "
            + ", ".join(f"{k} {v}" for k, v in split.get("counts", {}).items())
            + f" ({split.get('groups')} groups, {split.get('multi_item_groups')} with 2+ images)"
        )
    for task, balance in stats.get("class_balance", {}).items():
        if not balance:
            continue
        table = Table("label", "n", "share", "train", "held out", title=f"class balance: {task}")
        for label, row in balance.items():
            table.add_row(
                label,
                str(row["n"]),
                f"{row['share']:.1%}",
                str(row.get("train", "")),
                str(row.get("held_out", "")),
            )
        out.print(table)
    ranking = stats.get("ranking", {})
    if "skipped" in ranking:
        out.print(f"label-issue ranking: skipped ({ranking['skipped']})")
    for task, info in ranking.get("tasks", {}).items():
        if "skipped" in info:
            out.print(f"ranking {task}: skipped ({info['skipped']})")
        else:
            out.print(
                f"ranking {task}: {info['scored']} scored, {info['flagged']} likely label errors "
                f"(confident learning, {info['folds']}-fold out-of-fold)"
            )
    suspicious = stats.get("top_suspicious", [])[:top]
    if suspicious:
        table = Table(title="most suspicious")
        for column in ("suspicion", "type", "color", "task", "model says", "conf"):
            table.add_column(column, no_wrap=True)
        table.add_column("image", overflow="fold")
        for row in suspicious:
            table.add_row(
                f"{row['suspicion']:.3f}",
                row["image_type"] or "-",
                row["color"] or "-",
                row.get("task") or "-",
                row["model_label"] or "-",
                f"{row['model_confidence']:.2f}",
                str(row.get("origin") or row["content_sha256"][:12]),
            )
        out.print(table)


def _print_candidates(candidates: dict[str, Any] | None) -> None:
    """Per candidate kind: what was found, considered, added (flagged) and skipped."""
    if not candidates:
        return
    window = candidates.get("window", {})
    for kind, info in candidates.items():
        if kind == "window":
            continue
        skipped = ", ".join(f"{k} {v}" for k, v in sorted(info.get("skipped", {}).items()))
        out.print(
            f"candidates {kind.replace('_', '-')} (seen since {window.get('since')}): "
            f"{info.get('considered', 0)} considered, {info.get('added', 0)} added flagged "
            f"for review; skipped: {skipped or 'none'}"
        )
        if "far_threshold" in info:
            out.print(f"  far threshold {info['far_threshold']:g} from {info['threshold_source']}")
        if "rule" in info:
            out.print(f"  jump rule: {info['rule']}")
            advertisers = info.get("advertisers", [])
            if not advertisers:
                out.print("  no advertiser's fix rate jumped")
            for adv in advertisers:
                recent, base = adv["recent"], adv["baseline"]
                out.print(
                    f"  {adv['advertiser_id']}: {recent['rate']:.1%} recently "
                    f"({recent['fixes']}/{recent['answers']}) vs {base['rate']:.1%} baseline "
                    f"({base['fixes']}/{base['answers']})"
                )


@app.command("freeze")
def freeze_command(
    ref: Annotated[str, typer.Argument(help="Draft version NAME@N (or NAME: latest).")],
) -> None:
    """Freeze a draft: its manifest hash is fixed and it can no longer change."""
    from cartag.clock import SystemClock
    from cartag.store import datasets as repo

    settings = load_settings()
    db = open_database(settings)
    try:
        with db.write() as session:
            version = repo.freeze(session, ref, SystemClock().now())
            ref_done, sha = version.ref, version.manifest_sha256
    except CartagError as exc:
        raise fail(exc) from exc
    finally:
        db.dispose()
    out.print(f"froze {ref_done}: manifest sha256 {sha}")


@app.command("export")
def export_command(
    ref: Annotated[str, typer.Argument(help="NAME@N (or NAME: latest).")],
    out_path: Annotated[
        Path, typer.Option("--out", help="Manifest JSON file to write (-: standard output).")
    ],
) -> None:
    """Write a version's manifest (items, labels, splits, provenance, hash) as JSON."""
    from cartag.store import datasets as repo

    settings = load_settings()
    # "-" is standard output, as for most tools (it made a file named "-" in the
    # working folder); the summary line then goes to standard error.
    to_stdout = str(out_path) == "-"
    try:
        if not to_stdout:
            check_output(out_path, "--out", settings)
    except CartagError as exc:
        raise fail(exc) from exc
    db = open_database(settings)
    try:
        with db.read() as session:
            document = repo.export_manifest(session, ref)
    except CartagError as exc:
        raise fail(exc) from exc
    finally:
        db.dispose()
    text = json.dumps(document, indent=1, sort_keys=True)
    summary = f"{len(document['items'])} items of {document['ref']}"
    if to_stdout:
        typer.echo(text)
        err.print(f"wrote {summary} to standard output")
        return
    try:
        replace_file(out_path, text)
    except OSError as exc:
        err.print(f"[red]error:[/red] cannot write --out {out_path}: {exc.strerror or exc}")
        raise typer.Exit(2) from exc
    out.print(f"wrote {out_path}: {summary}")


@app.command("shared-labels")
def shared_labels_command(
    data: Annotated[
        Path, typer.Option(help="Folder holding vcr-train, vcor-train and type-train.")
    ],
    out_path: Annotated[Path, typer.Option("--out", help="Labels CSV to write.")],
    split_vcr: Annotated[
        bool,
        typer.Option(
            help="Name vcr's rows 'vcr held-out' / 'vcr train split' (the bundled model "
            "was fitted on the second)."
        ),
    ] = False,
) -> None:
    """Write the shared data's reviewed labels (LABELS.md) as a CSV for `cartag evaluate`."""
    from cartag.training.datasets.sources import read_sources, summary, write_labels_csv

    try:
        check_output(out_path, "--out", load_settings(), [data])
        rows = read_sources(data, split_vcr=split_vcr)
    except CartagError as exc:
        raise fail(exc) from exc
    except (OSError, ValueError) as exc:
        err.print(f"[red]error:[/red] cannot read the shared data in {data}: {exc}")
        raise typer.Exit(2) from exc
    try:
        write_labels_csv(rows, out_path)
    except OSError as exc:
        err.print(f"[red]error:[/red] cannot write --out {out_path}: {exc.strerror or exc}")
        raise typer.Exit(2) from exc
    for source, counts in summary(rows).items():
        out.print(f"{source}: " + ", ".join(f"{k} {v}" for k, v in counts.items()))
    out.print(f"wrote {out_path}; evaluate with: cartag evaluate {data} --labels {out_path}")
