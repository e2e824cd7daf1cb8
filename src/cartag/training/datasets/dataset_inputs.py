"""Inputs of a dataset build: its options, command-line values, labels of an imported folder.

:class:`BuildOptions` says how to build a version, :class:`BuildProgress` receives its
progress and :class:`BuildReport` is what comes back.

Folder import labels an image by its folder name when that is a type or a color,
then by each labels CSV (:func:`read_label_csv`). A build may also add generated
Placeholder cards (:func:`placeholder_candidates`): real photo folders have none.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from cartag.errors import InputError
from cartag.imaging.placeholders import generate_placeholders
from cartag.training.datasets.filters import Candidate
from cartag.vocab import normalize_color, normalize_image_type

LAST_RETRAIN = "last-retrain"
PLACEHOLDER_GENERATOR = "cartag.imaging.placeholders"
# Listing sites serve their "photo coming soon" cards as JPEGs too.
_PLACEHOLDER_QUALITY = 90


def parse_test_set(value: str) -> str:
    """``advertiser=ID`` -> ``ID``.

    Raises:
        InputError: Another form.
    """
    kind, sep, ident = value.partition("=")
    if kind.strip() != "advertiser" or not sep or not ident.strip():
        raise InputError(
            f"--test-set {value!r}: write advertiser=ID (e.g. advertiser=dealer-42)",
            field="test_set",
        )
    return ident.strip()


def parse_cutoff(value: str) -> dt.datetime | Literal["last-retrain"]:
    """``last-retrain`` or an ISO date/datetime (naive = UTC).

    Raises:
        InputError: Neither.
    """
    if value == LAST_RETRAIN:
        return "last-retrain"
    try:
        parsed = dt.datetime.fromisoformat(value)
    except ValueError as exc:
        raise InputError(
            f"--add-fixes-since {value!r}: write last-retrain or a date such as 2026-11-30 "
            "or 2026-11-30T12:00:00+00:00",
            field="add_fixes_since",
        ) from exc
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.UTC)


def _relative_forms(file: Path, folder: Path) -> list[str]:
    """``file`` relative to ``folder`` and to its parent, as listed and as resolved.

    The listed form comes first: a folder of symbolic links to the photos (a
    selection of a larger collection) names its files by the links, whose targets
    lie outside it.
    """
    forms = []
    for path, base in ((file.absolute(), folder.absolute()), (file.resolve(), folder.resolve())):
        for root in (base.parent, base):
            if path.is_relative_to(root):
                forms.append(path.relative_to(root).as_posix())
    return forms


def relative_path(file: Path, folder: Path) -> str:
    """The imported file's path as provenance records it: from the folder's parent."""
    forms = _relative_forms(file, folder)
    return forms[0] if forms else file.resolve().as_posix()


def folder_labels(file: Path) -> list[str | None]:
    """``[image_type, color]`` from the image's folder name, when it is one."""
    name = file.parent.name
    try:
        return [normalize_image_type(name), None]
    except ValueError:
        pass
    try:
        return [None, normalize_color(name)]
    except ValueError:
        return [None, None]


def read_label_csv(
    csv_path: Path, folder: Path, files: Sequence[Path]
) -> tuple[dict[Path, tuple[str | None, str | None, str | None]], int]:
    """Labels of a CSV for the imported files.

    The CSV has a ``path`` column and ``image_type`` (or ``type``) and/or ``color``
    (and optionally ``listing_id``). A path may be absolute, relative to the CSV's
    folder, to ``folder``, or to ``folder``'s parent (vcr-train's CSVs write
    ``vcr-train/<Color>/<file>``).

    Returns:
        ``{file as listed in files: (image_type, color, listing_id)}`` and the number of
        rows naming no imported file.

    Raises:
        InputError: Unreadable CSV, no path or label column, or a label outside the
            vocabulary (the message names the line).
    """
    try:
        with csv_path.open(newline="", encoding="utf-8-sig") as fh:
            reader = csv.DictReader(fh)
            columns = {(n or "").strip().lower(): n for n in reader.fieldnames or [] if n}
            rows = [(reader.line_num, row) for row in reader]
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise InputError(f"cannot read {csv_path}: {exc}", field="labels") from exc
    type_col = columns.get("image_type") or columns.get("type")
    color_col = columns.get("color") or columns.get("colour")
    if "path" not in columns or not (type_col or color_col):
        raise InputError(
            f"{csv_path} needs a path column and image_type (or type) and/or color columns "
            f"(header: {', '.join(columns) or 'none'})",
            field="labels",
        )
    known: dict[str, Path] = {}
    for file in files:
        for key in (*_relative_forms(file, folder), file.absolute().as_posix()):
            known.setdefault(key, file)
        # A link's target names the first link to it.
        known.setdefault(file.resolve().as_posix(), file)
    found: dict[Path, tuple[str | None, str | None, str | None]] = {}
    missing = 0
    for line, row in rows:
        raw = (row.get(columns["path"]) or "").strip()
        match = known.get(Path(raw).as_posix()) if raw else None
        if match is None and raw:
            beside_csv = csv_path.parent / raw
            match = known.get(beside_csv.absolute().as_posix()) or known.get(
                beside_csv.resolve().as_posix()
            )
        if match is None:
            missing += 1
            continue
        try:
            image_type = (
                normalize_image_type(row[type_col]) if type_col and row.get(type_col) else None
            )
            color = normalize_color(row[color_col]) if color_col and row.get(color_col) else None
        except ValueError as exc:
            raise InputError(f"{csv_path.name}:{line}: {exc}", field="labels") from exc
        listing = (row.get(columns["listing_id"]) or "").strip() if "listing_id" in columns else ""
        found[match] = (image_type, color, listing or None)
    return found, missing


def placeholder_candidates(count: int, seed: int = 0) -> list[Candidate]:
    """``count`` generated placeholder cards as dataset candidates (label Placeholder, no color).

    Card ``i`` depends only on ``(seed, i)`` and is encoded as a JPEG, so the same
    count and seed give the same bytes and content hashes on every run.

    Args:
        count: How many cards (0 gives none).
        seed: Generator seed, kept in each item's provenance.

    Raises:
        InputError: A negative count.
    """
    if count < 0:
        raise InputError(f"--placeholders {count}: give 0 or more", field="placeholders")
    out = []
    for index, card in enumerate(generate_placeholders(count, seed)):
        buffer = io.BytesIO()
        card.image.convert("RGB").save(buffer, "JPEG", quality=_PLACEHOLDER_QUALITY)
        provenance = {
            "source": "generated",
            "generator": PLACEHOLDER_GENERATOR,
            "seed": seed,
            "index": index,
            "family": card.family,
        }
        out.append(Candidate(buffer.getvalue(), "Placeholder", None, provenance))
    return out


class BuildProgress:
    """Progress of a build; the CLI draws bars, the default says nothing."""

    def begin(self, stage: str, total: int) -> None:
        """A stage (``download``, ``filter``, ``embed``) starts with ``total`` steps."""

    def advance(self, n: int = 1) -> None:
        """``n`` more steps of the current stage are done."""


@dataclass(frozen=True)
class BuildOptions:
    """How to build a version.

    Attributes:
        name: Dataset name; the version becomes ``NAME@N``.
        user: Recorded as ``created_by``.
        test_advertisers: Advertisers that get an ad-hoc test set.
        crop: ``letterbox`` or ``none`` (None: the ``dataset_crop`` setting).
        rank: Compute the label-issue ranking (needs the backbone).
        notes: Free text kept on the version.
        placeholders: Generated Placeholder cards to add (real photo folders have none,
            and a model trained without them never predicts the class).
        placeholder_seed: Seed of those cards (card ``i`` depends on ``(seed, i)``).
    """

    name: str
    user: str = "cli"
    test_advertisers: Sequence[str] = ()
    crop: str | None = None
    rank: bool = True
    notes: str | None = None
    placeholders: int = 0
    placeholder_seed: int = 0


@dataclass
class BuildReport:
    """What a build did: the new version's ref and its stats (also stored on it)."""

    ref: str
    stats: dict[str, Any] = field(default_factory=dict)
