"""The shared image folders as one labelled table with a ``source`` per row.

Honest figures hold whole sources out (train on one website dump, test on
another), so every row says where it came from:

=============  ============================  ==========================  ==========
source         image_type                    color                       group
=============  ============================  ==========================  ==========
``vcr``        packaged ``type_labels.csv``  folder label, reviewed      ``vcr``
``vcor``       reviewed, else ``Dealer``     folder label, reviewed      ``vcor``
``type-train`` labels.csv ``type``           empty                       the ``repo``
=============  ============================  ==========================  ==========

With ``split_vcr`` vcr's source is ``vcr held-out`` or ``vcr train split``
(the bundled split): the shipped model is only honestly measured on the first.
"Reviewed" is the packaged label review (:mod:`cartag.training.datasets.relabels`): the
color datasets' folders follow other conventions than LABELS.md (maroon cars in
Red folders, cut-outs on white among vcor's "real photos"), so every photo a
person relabelled takes the reviewed label. vcor has no type labels of its own:
every photo that could be a cut-out on white (a white border share of 0.25 or
more) was looked at; the rest are real photos, ``Dealer`` by LABELS.md. ``group``
is the website repository a type-train image came from, for leave-group-out
folds (:func:`group_folds`); repositories that share near-duplicate images are
merged first (:func:`merge_linked`) so a copy cannot sit on both sides.

The written CSV (``path,image_type,color,source,group``, paths relative to the
data root) is what ``cartag evaluate <root> --labels all.csv`` reads; its
``source`` column makes the command report per-source figures::

    cartag dataset shared-labels --data ../shared/data --out cartag-data/all.csv [--split-vcr]
    cartag evaluate ../shared/data --labels cartag-data/all.csv --json all.json
"""

from __future__ import annotations

import csv
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Final

import numpy as np

from cartag.training.datasets.dataset import holdout_mask
from cartag.training.datasets.relabels import Relabel, read_relabels, relabel
from cartag.training.datasets.type_labels import TYPE_LABELS_PATH, read_type_labels
from cartag.training.fitting.cleaning import phash_groups
from cartag.vocab import COLORS, IMAGE_TYPES

VCR: Final[str] = "vcr"
VCOR: Final[str] = "vcor"
TYPE_TRAIN: Final[str] = "type-train"
FOLDERS: Final[dict[str, str]] = {VCR: "vcr-train", VCOR: "vcor-train", TYPE_TRAIN: "type-train"}
VCR_HELD_OUT: Final[str] = "vcr held-out"
VCR_TRAIN_SPLIT: Final[str] = "vcr train split"
CSV_COLUMNS: Final[tuple[str, ...]] = ("path", "image_type", "color", "source", "group")


@dataclass(frozen=True)
class SourceRow:
    """One labelled image of the shared data.

    Attributes:
        path: Path relative to the data root (``vcor-train/Black/x.jpg``).
        image_type: True type, or None where the source has no type label.
        color: True color, or None where the source has no color label.
        source: ``vcr``, ``vcor`` or ``type-train``.
        group: Finer origin for leave-group-out folds (the repository for
            type-train, else the source).
    """

    path: str
    image_type: str | None
    color: str | None
    source: str
    group: str


def _read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def _checked(value: str | None, vocab: Sequence[str], where: str) -> str | None:
    if not value:
        return None
    if value not in vocab:
        raise ValueError(f"{where}: {value!r} is not one of {', '.join(vocab)}")
    return value


def read_sources(
    data_root: Path,
    type_labels: Path = TYPE_LABELS_PATH,
    *,
    split_vcr: bool = False,
    relabels: Mapping[tuple[str, str], Relabel] | None = None,
) -> list[SourceRow]:
    """Read the folders of ``data_root`` that exist into one table.

    Args:
        data_root: The folder holding ``vcr-train``, ``vcor-train`` and ``type-train``.
        type_labels: The cleaned vcr type labels (keyed by vcr's labels.csv path).
        relabels: The label review applied on top of the folders' labels; None
            reads the packaged one, ``{}`` applies none.
        split_vcr: Name vcr's rows :data:`VCR_HELD_OUT` or :data:`VCR_TRAIN_SPLIT` by
            the bundled split rule (:mod:`cartag.training.datasets.dataset`): the shipped model
            was fitted on the second, so only the first gives it honest figures.

    Returns:
        Rows in source order (vcr, vcor, type-train), each in its labels.csv order.

    Raises:
        FileNotFoundError: None of the folders is there.
        ValueError: A label is outside the vocabulary.
    """
    review = read_relabels() if relabels is None else relabels
    rows: list[SourceRow] = []
    folder_colors: list[str] = []
    vcr = data_root / FOLDERS[VCR] / "labels.csv"
    if vcr.is_file():
        types = {path: label.type for path, label in read_type_labels(type_labels).items()}
        for n, row in enumerate(_read_csv(vcr), start=2):
            where = f"{vcr}:{n}"
            # vcr's labels.csv already writes paths relative to the data root.
            color = relabel(review, row["path"], "color", row["color"])
            rows.append(
                SourceRow(
                    row["path"],
                    _checked(types.get(row["path"]), IMAGE_TYPES, where),
                    _checked(color, COLORS, where),
                    VCR,
                    VCR,
                )
            )
            folder_colors.append(row["color"])
    if split_vcr and rows:
        # The split's strata are the folders, as when the bundled model was fitted,
        # whatever the review changed: the held-out rows stay the same photos.
        held = holdout_mask([r.path for r in rows], folder_colors)
        rows = [
            replace(r, source=VCR_HELD_OUT if h else VCR_TRAIN_SPLIT)
            for r, h in zip(rows, held, strict=True)
        ]
    vcor = data_root / FOLDERS[VCOR] / "labels.csv"
    if vcor.is_file():
        for n, row in enumerate(_read_csv(vcor), start=2):
            path = f"{FOLDERS[VCOR]}/{row['path']}"
            where = f"{vcor}:{n}"
            color = _checked(relabel(review, path, "color", row["color"]), COLORS, where)
            image_type = relabel(review, path, "type", "Dealer")
            rows.append(SourceRow(path, image_type, color, VCOR, VCOR))
    typed = data_root / FOLDERS[TYPE_TRAIN] / "labels.csv"
    if typed.is_file():
        for n, row in enumerate(_read_csv(typed), start=2):
            image_type = _checked(row["type"], IMAGE_TYPES, f"{typed}:{n}")
            path = f"{FOLDERS[TYPE_TRAIN]}/{row['path']}"
            rows.append(SourceRow(path, image_type, None, TYPE_TRAIN, row["repo"] or TYPE_TRAIN))
    if not rows:
        raise FileNotFoundError(
            f"none of {', '.join(FOLDERS.values())} (with a labels.csv) is in {data_root}"
        )
    return rows


def write_labels_csv(rows: Sequence[SourceRow], out: Path) -> Path:
    """Write the table as ``path,image_type,color,source,group`` (empty cell = no label).

    Returns:
        ``out``.
    """
    out.parent.mkdir(parents=True, exist_ok=True)
    # Whole or not at all: a failed write never leaves a half table where a good one was.
    partial = out.with_name(out.name + ".partial")
    with partial.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(CSV_COLUMNS)
        for r in rows:
            writer.writerow([r.path, r.image_type or "", r.color or "", r.source, r.group])
    partial.replace(out)
    return out


def merge_linked(groups: Sequence[str], links: Sequence[Sequence[int]]) -> list[str]:
    """Merge groups that share a linked pair of rows (e.g. near-duplicate images).

    Args:
        groups: N group names, one per row.
        links: Sets of row indices that must end up in one group.

    Returns:
        N merged names: each merged group is named by its alphabetically first member.
    """
    parent = {g: g for g in groups}

    def find(g: str) -> str:
        while parent[g] != g:
            parent[g] = parent[parent[g]]
            g = parent[g]
        return g

    for link in links:
        roots = sorted({find(groups[i]) for i in link})
        for other in roots[1:]:
            parent[other] = roots[0]
    return [find(g) for g in groups]


def group_folds(groups: Sequence[str], n_folds: int) -> np.ndarray:
    """Assign whole groups to folds, balancing the rows per fold.

    Largest group first into the fold with the fewest rows so far (ties: the
    lower fold, then the group name), so the assignment is deterministic and no
    fold is left empty while there are at least ``n_folds`` groups.

    Args:
        groups: N group names, one per row.
        n_folds: Number of folds (at least 2).

    Returns:
        int64 (N,) fold index per row.

    Raises:
        ValueError: Fewer than 2 folds, or fewer groups than folds.
    """
    sizes = Counter(groups)
    if n_folds < 2 or len(sizes) < n_folds:
        raise ValueError(f"need at least 2 folds and {n_folds} groups; got {len(sizes)} groups")
    load = [0] * n_folds
    fold_of: dict[str, int] = {}
    for group, size in sorted(sizes.items(), key=lambda item: (-item[1], item[0])):
        fold = min(range(n_folds), key=lambda f: (load[f], f))
        fold_of[group] = fold
        load[fold] += size
    return np.asarray([fold_of[g] for g in groups], dtype=np.int64)


def leave_group_out_folds(
    groups: Sequence[str], hashes: Sequence[str], n_folds: int, max_distance: int
) -> np.ndarray:
    """Folds of whole groups, where groups sharing a near-duplicate image count as one.

    Args:
        groups: N group names (repositories), one per row.
        hashes: N 64-bit hex pHashes of the rows' images.
        n_folds: Number of folds.
        max_distance: Largest pHash Hamming distance that links two images.

    Returns:
        int64 (N,) fold per row (:func:`group_folds` of the :func:`merge_linked` groups).
    """
    links = phash_groups(hashes, max_distance)
    return group_folds(merge_linked(groups, links), n_folds)


def summary(rows: Sequence[SourceRow]) -> dict[str, dict[str, int]]:
    """Rows per source with a type label, a color label, and distinct groups."""
    out: dict[str, dict[str, int]] = {}
    for source in dict.fromkeys(r.source for r in rows):
        mine = [r for r in rows if r.source == source]
        out[source] = {
            "rows": len(mine),
            "image_type": sum(1 for r in mine if r.image_type),
            "color": sum(1 for r in mine if r.color),
            "groups": len({r.group for r in mine}),
        }
    return out
