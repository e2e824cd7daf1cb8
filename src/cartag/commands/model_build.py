"""``cartag models build-bundled`` and ``cartag models finetune``: make the bundled model.

It only translates: the work is :mod:`cartag.training.bundled` (the build:
:func:`~cartag.training.bundled.build.train_bundled`; the fine-tuning:
:func:`~cartag.training.bundled.finetune.run`). Imports stay inside the commands so that
``cartag --help`` does not load torch; the options whose defaults are training constants
take None and the library's value is used (the help names it).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

import typer

from cartag.commands.common import err, overwritten_input
from cartag.errors import CartagError


def _refuse(message: str) -> typer.Exit:
    """Print ``message`` as a CLI error; raise the returned Exit (code 2)."""
    err.print(f"[red]error:[/red] {message}")
    return typer.Exit(2)


def _check_common(data: Path, out: Path, variant: str, threads: int, *, folder: bool) -> None:
    """What both commands check before minutes of training: the inputs and the output.

    Args:
        data: ``--data``.
        out: ``--out``: a model folder (``folder``) or a weights file.
        variant: ``--variant``.
        threads: ``--threads``.
        folder: Whether ``--out`` is a folder to write (build-bundled) or a file.

    Raises:
        typer.Exit: Code 2, the problem said in one line.
    """
    from cartag.models.variants import get_variant

    if not data.is_dir():
        raise _refuse(f"--data {data} is not a folder; pass the shared data's folder")
    try:
        get_variant(variant)
    except CartagError as exc:
        raise _refuse(exc.message) from exc
    if threads < 0:
        raise _refuse("--threads must be 0 (torch's default) or more")
    if overwritten_input(out, [data]) is not None:
        # Never over the labels or photos it trains on (a weights file over labels.csv).
        raise _refuse(
            f"--out {out} would overwrite the training data in {data}: choose a path elsewhere"
        )
    if folder:
        if out.exists() and not out.is_dir():
            raise _refuse(f"--out {out} is a file: give a folder for the model (new or existing)")
        return
    if out.is_dir():
        raise _refuse(f"--out {out} is a folder: give a weights file path ending in .npz")
    if out.suffix != ".npz":
        raise _refuse(f"--out {out}: the weights are written as .npz; give a path ending in .npz")


@contextmanager
def _writing(out: Path) -> Iterator[None]:
    """Make ``--out``'s folder now; if the command then fails, remove what it made.

    The output is written after the training, so a path that cannot be written is found
    at once by making its folder; a refused option or a failed training must not leave
    that folder behind, empty.

    Raises:
        typer.Exit: Code 2, the folder cannot be made.
    """
    folder = out if out.suffix == "" else out.parent
    made = [p for p in (folder, *folder.parents) if not p.exists()]  # deepest first
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise _refuse(f"--out {out} cannot be written: {exc.strerror or exc}") from exc
    try:
        yield
    except BaseException:
        for path in made:
            try:
                path.rmdir()  # only if still empty: never what the command wrote
            except OSError:
                break
        raise


def _failed(exc: Exception) -> typer.Exit:
    """A failure of the training code (a bad file among the inputs, a model error)."""
    if isinstance(exc, CartagError):
        return _refuse(exc.message)
    if isinstance(exc, OSError):
        where = f" ({exc.filename})" if exc.filename else ""
        return _refuse(f"{exc.strerror or exc}{where}")
    return _refuse(str(exc))


def build_bundled(
    data: Annotated[
        Path,
        typer.Option(
            help="The vcr-train folder, or with --sources the data root holding the sets."
        ),
    ],
    out: Annotated[Path, typer.Option(help="Model folder to write.")],
    sources: Annotated[
        str | None,
        typer.Option(
            help="Comma-separated sources of the data root (vcr,vcor,type-train); default: "
            "all of them when --data has no labels.csv, else the single folder."
        ),
    ] = None,
    recolor_min_real: Annotated[
        int,
        typer.Option(
            help="Recolor target colors with fewer real training photos than this (1 = none)."
        ),
    ] = 1,
    cache_dir: Annotated[Path, typer.Option(help="Embedding cache folder.")] = Path(
        "cartag-data/cache"
    ),
    variant: Annotated[str, typer.Option(help="Backbone variant.")] = "efficientnet-lite0",
    placeholders: Annotated[int, typer.Option(help="Generated placeholder cards.")] = 840,
    seed: Annotated[int, typer.Option(help="Seed of the placeholders and recoloring.")] = 0,
    recolored_per_color: Annotated[
        int | None,
        typer.Option(
            help="Recolored training photos per color the set lacks (0 = none; default: "
            "cartag.training.heads.recolor.RECOLORED_PER_COLOR)."
        ),
    ] = None,
    l2: Annotated[float | None, typer.Option(help="Skip the CV choice of l2.")] = None,
    threads: Annotated[int, typer.Option(help="Backbone threads (0 = torch's default).")] = 0,
    backbone_weights: Annotated[
        Path | None, typer.Option(help="Fine-tuned weights (.npz, `cartag models finetune`).")
    ] = None,
    int8: Annotated[
        bool | None,
        typer.Option(
            "--int8/--no-int8",
            help="Also calibrate the int8 backbone on training photos and fit heads on its "
            "embeddings (quantization.json + *_int8 heads); default: on for builds of "
            "several sources, which it needs.",
        ),
    ] = None,
    calibration: Annotated[
        str,
        typer.Option(
            help="How the int8 activation ranges are measured: minmax, entropy, percentile."
        ),
    ] = "minmax",
) -> None:
    """Train the bundled model: type and color heads on frozen EfficientNet-Lite embeddings."""
    from cartag.training.bundled.build import train_bundled
    from cartag.training.datasets import all_sources
    from cartag.training.heads.recolor import RECOLORED_PER_COLOR

    per_color = RECOLORED_PER_COLOR if recolored_per_color is None else recolored_per_color
    if per_color < 0:
        raise _refuse("--recolored-per-color must be 0 or more")
    if recolor_min_real < 1:
        raise _refuse("--recolor-min-real must be 1 or more")
    chosen: list[str] | None = None
    if sources is not None:
        try:
            chosen = all_sources.parse_sources(sources)
        except ValueError as exc:
            raise _refuse(str(exc)) from exc
    elif not (data / "labels.csv").is_file():
        chosen = list(all_sources.ALL)
    if backbone_weights is not None and not backbone_weights.is_file():
        what = "is a folder" if backbone_weights.is_dir() else "does not exist"
        raise _refuse(f"--backbone-weights {backbone_weights} {what}: give the .npz weights file")
    if int8 and chosen is None:
        raise _refuse("--int8 needs a build of several sources (--sources)")
    if calibration not in ("minmax", "entropy", "percentile"):
        raise _refuse("--calibration must be minmax, entropy or percentile")
    if placeholders < 0:
        raise _refuse("--placeholders must be 0 or more")
    if l2 is not None and not l2 > 0:
        raise _refuse("--l2 must be more than 0 (or left out: chosen by cross-validation)")
    _check_common(data, out, variant, threads, folder=True)
    with _writing(out):
        try:
            config = train_bundled(
                data,
                out,
                cache_dir,
                variant=variant,
                n_placeholders=placeholders,
                recolored_per_color=per_color,
                seed=seed,
                l2=l2,
                threads=threads,
                weights=backbone_weights,
                sources=chosen,
                recolor_min_real=recolor_min_real,
                int8=chosen is not None if int8 is None else int8,
                calibration_method=calibration,
            )
        except (CartagError, OSError, ValueError) as exc:
            raise _failed(exc) from exc
    typer.echo(f"wrote {out} ({config['version']})")
    typer.echo((out / "MODEL_CARD.md").read_text(encoding="utf-8"))


def finetune(
    data: Annotated[Path, typer.Option(help="The vcr-train folder.")],
    out: Annotated[Path, typer.Option(help="Weights file to write (.npz).")],
    variant: Annotated[str, typer.Option(help="Backbone variant.")] = "efficientnet-lite0",
    epochs: Annotated[
        int | None, typer.Option(help="Epochs (default: the recipe's, Recipe.epochs).")
    ] = None,
    color_weight: Annotated[
        float | None,
        typer.Option(
            help="Weight of the color loss beside the type loss (0 = type only; default: "
            "the recipe's, Recipe.color_weight)."
        ),
    ] = None,
    restage_stock: Annotated[
        float | None,
        typer.Option(
            help="Chance that a white-backdrop Stock photo is shown on a new backdrop "
            "(0 = never; default: the recipe's, Recipe.restage_stock)."
        ),
    ] = None,
    threads: Annotated[int, typer.Option(help="Torch threads (0 = torch's default).")] = 0,
) -> None:
    """Fine-tune the whole EfficientNet-Lite backbone for cartag's two tasks."""
    from cartag.training.bundled.finetune import Recipe, run

    epochs = Recipe.epochs if epochs is None else epochs
    color_weight = Recipe.color_weight if color_weight is None else color_weight
    restage_stock = Recipe.restage_stock if restage_stock is None else restage_stock
    _check_common(data, out, variant, threads, folder=False)
    if not (data / "labels.csv").is_file():
        raise _refuse(f"{data} has no labels.csv; pass --data <vcr-train folder>")
    if epochs <= 0:
        raise _refuse("--epochs must be at least 1")
    if not 0 <= color_weight <= 10:
        raise _refuse("--color-weight must be between 0 and 10")
    if not 0 <= restage_stock <= 1:
        raise _refuse("--restage-stock must be between 0 and 1")
    with _writing(out):
        try:
            metadata = run(
                data,
                out,
                variant=variant,
                recipe=Recipe(
                    epochs=epochs, color_weight=color_weight, restage_stock=restage_stock
                ),
                threads=threads,
                progress=lambda line: typer.echo(line),
            )
        except (CartagError, OSError, ValueError) as exc:
            raise _failed(exc) from exc
    typer.echo(f"wrote {out} ({metadata['backbone_id']}): held-out {metadata['log']['held_out']}")


def add_reference(
    folder: Annotated[Path, typer.Argument(help="The model folder (config.json and heads).")],
    data: Annotated[
        Path, typer.Option(help="The shared data root holding the sources it was trained on.")
    ] = Path("../shared/data"),
    cache_dir: Annotated[Path, typer.Option(help="Embedding cache folder.")] = Path(
        "cartag-data/cache"
    ),
    threads: Annotated[int, typer.Option(help="Backbone threads (0 = torch's default).")] = 0,
) -> None:
    """Add the drift reference (reference.npz) to a model folder, from its training data.

    A registered version's folder must not change: add the reference to the folder you
    register, then register it under a new version.
    """
    from cartag.errors import ModelError
    from cartag.training.bundled.reference import add_reference as build

    if threads < 0:
        raise _refuse("--threads must be 0 (torch's default) or more")
    if not folder.is_dir():
        raise _refuse(f"{folder} does not exist or is not a folder; give the model folder")
    from cartag.commands.common import load_settings
    from cartag.deploy.loadcheck import models_root

    registered = models_root(load_settings()).expanduser().resolve()
    if registered in folder.expanduser().resolve().parents:
        # Its files are what the registry checked and recorded (files_sha256).
        raise _refuse(
            f"{folder} is a registered version's folder, which must not change: copy it, "
            "add the reference to the copy, and register that under a new version"
        )
    if not (folder / "config.json").is_file():
        raise _refuse(
            f"{folder} is not a model folder (no config.json); give the folder to register"
        )
    try:
        block = build(folder, data, cache_dir, threads=threads)
    except (ModelError, ValueError, FileNotFoundError) as exc:
        raise _refuse(str(exc)) from exc
    q = block["quantiles"]
    typer.echo(
        f"wrote {folder / block['file']}: {block['k']} centroids of "
        f"{block['built_from']['n_train']} training embeddings; held-out novelty "
        f"p50 {q['p50']:.4f} p95 {q['p95']:.4f} "
        f"p99 {q['p99']:.4f}; far above {block['far_threshold']:.4f}"
    )


def register(app: typer.Typer) -> None:
    """Add the build commands to ``cartag models``."""
    app.command("build-bundled")(build_bundled)
    app.command("finetune")(finetune)
    app.command("add-reference")(add_reference)
