"""The bundled model's remaining color errors on the held-out photos, as thumbnails by cause.

Scores a model folder on the held-out vcr and vcor photos of the all-sources build
(:func:`cartag.training.datasets.all_sources.source_holdout`; labels reviewed by
LABELS.md), prints the errors grouped by (true, predicted) color, largest group first,
and draws a contact sheet: one tile per error, grouped by true color, each labelled
``true->predicted source``. The sheet holds the data's photos, so it is written under
``cartag-data/`` (ignored by git), never committed.

Usage::

    .venv/bin/python -m benchmarks.color_errors --data ../shared/data \\
        [--model src/cartag/models/bundled] [--out cartag-data/errors/color_errors.png]
"""

from __future__ import annotations

import argparse
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from cartag.models.classifier import BUNDLED_DIR, EmbeddingClassifier
from cartag.training.datasets.all_sources import source_holdout
from cartag.training.datasets.sources import VCOR, VCR, SourceRow, read_sources

TILE = 128
COLUMNS = 10
BATCH = 64


def held_out_color_rows(data_root: Path) -> list[SourceRow]:
    """vcr and vcor rows with a color that the all-sources build held out."""
    rows = [r for r in read_sources(data_root) if r.source in (VCR, VCOR)]
    # type-train folds only matter for type-train rows, which are not here.
    held = source_holdout(rows, np.full(len(rows), -1))
    return [r for r, h in zip(rows, held, strict=True) if h and r.color]


def errors_by_pair(
    model: EmbeddingClassifier, data_root: Path, rows: Sequence[SourceRow]
) -> dict[tuple[str, str], list[SourceRow]]:
    """Rows the model colors wrongly, by (true, predicted) color."""
    groups: dict[tuple[str, str], list[SourceRow]] = defaultdict(list)
    for start in range(0, len(rows), BATCH):
        batch = rows[start : start + BATCH]
        images = [Image.open(data_root / r.path).convert("RGB") for r in batch]
        for row, prediction in zip(batch, model.predict(images), strict=True):
            if prediction.color != row.color:
                groups[(str(row.color), str(prediction.color))].append(row)
    return dict(groups)


def contact_sheet(data_root: Path, groups: dict[tuple[str, str], list[SourceRow]]) -> Image.Image:
    """One labelled tile per error, grouped by true color then by group size."""
    order = sorted(groups.items(), key=lambda kv: (kv[0][0], -len(kv[1])))
    cells = [(f"{t}->{p} {r.source}", r) for (t, p), rows in order for r in rows]
    height = max(1, (len(cells) + COLUMNS - 1) // COLUMNS) * (TILE + 14)
    sheet = Image.new("RGB", (COLUMNS * TILE, height), "white")
    draw = ImageDraw.Draw(sheet)
    for i, (label, row) in enumerate(cells):
        with Image.open(data_root / row.path) as photo:
            tile = photo.convert("RGB")
        tile.thumbnail((TILE, TILE))
        x, y = (i % COLUMNS) * TILE, (i // COLUMNS) * (TILE + 14)
        sheet.paste(tile, (x, y + 14))
        draw.text((x + 2, y), label, fill="black")
    return sheet


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--data", type=Path, required=True, help="the shared data root")
    parser.add_argument("--model", type=Path, default=BUNDLED_DIR, help="model folder")
    parser.add_argument("--out", type=Path, default=Path("cartag-data/errors/color_errors.png"))
    args = parser.parse_args(argv)
    try:
        rows = held_out_color_rows(args.data)
        model = EmbeddingClassifier.from_dir(args.model)
    except (OSError, ValueError) as exc:
        raise SystemExit(f"error: {exc}") from exc
    groups = errors_by_pair(model, args.data, rows)
    n_errors = sum(len(v) for v in groups.values())
    print(f"{model.version}: {n_errors} color errors on {len(rows)} held-out photos")
    for (true, pred), members in sorted(groups.items(), key=lambda kv: -len(kv[1])):
        sources = ", ".join(sorted({m.source for m in members}))
        print(f"{true} -> {pred}: {len(members)} ({sources})")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    contact_sheet(args.data, groups).save(args.out)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
