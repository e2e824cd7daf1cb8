"""Label corrections made by looking at the shared photos against ``LABELS.md``.

The shared folders carry labels drawn by other conventions: the color datasets
name a folder per color (vcor's Red folder holds maroon cars that LABELS.md calls
Burgundy, its Purple folder some magenta ones), and vcor has no image types at
all, although hundreds of its photos are cut-outs on white (``Stock``).
``relabels.csv`` (packaged beside this module) records every such photo a person
looked at, kept or changed::

    path,field,old,new,reason
    vcor-train/Red/vcor-red-0474.jpg,color,Red,Burgundy,maroon body

``path`` is relative to the shared data root, ``field`` is ``color`` or ``type``,
``old`` the label the source gave (for vcor types: the presumed ``Dealer``),
``new`` the label by the convention, ``reason`` the rule that decided it. A row
with ``old == new`` says the photo was reviewed and kept. vcr-train's image types
are not here: they live in ``type_labels.csv``, whose ``note`` column carries the
same review.

How the candidates were found (statistics only ordered them; every decision was
made by looking): vcor photos by the share of near-white pixels in their border
(all with a share of 0.25 or more, and a sample below); both Red folders by the
darkness and hue of their red pixels, all of them looked at; vcor's Purple, Brown
and White folders and vcr's Brown and Grey folders photo by photo.
"""

from __future__ import annotations

import csv
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from cartag.vocab import COLORS, IMAGE_TYPES

RELABELS_PATH: Final[Path] = Path(__file__).resolve().parent / "relabels.csv"
FIELDS: Final[dict[str, tuple[str, ...]]] = {"color": COLORS, "type": IMAGE_TYPES}


@dataclass(frozen=True)
class Relabel:
    """One reviewed photo: the label its source gave and the one by the convention."""

    path: str
    field: str
    old: str
    new: str
    reason: str

    @property
    def changed(self) -> bool:
        """Whether the review changed the label."""
        return self.old != self.new


def read_relabels(path: Path = RELABELS_PATH) -> dict[tuple[str, str], Relabel]:
    """Read and check a relabel file.

    Returns:
        The rows by ``(path, field)``.

    Raises:
        ValueError: A row names an unknown field or label, or a ``(path, field)``
            repeats; the message gives the file and line.
    """
    rows: dict[tuple[str, str], Relabel] = {}
    with path.open(newline="", encoding="utf-8") as fh:
        for n, raw in enumerate(csv.DictReader(fh), start=2):
            row = Relabel(raw["path"], raw["field"], raw["old"], raw["new"], raw["reason"])
            vocab = FIELDS.get(row.field)
            if vocab is None:
                raise ValueError(f"{path}:{n}: field {row.field!r} is not color or type")
            for label in (row.old, row.new):
                if label not in vocab:
                    raise ValueError(f"{path}:{n}: {label!r} is not a {row.field}")
            if (row.path, row.field) in rows:
                raise ValueError(f"{path}:{n}: {row.path} {row.field} appears twice")
            rows[(row.path, row.field)] = row
    return rows


def relabel(
    relabels: Mapping[tuple[str, str], Relabel], path: str, field: str, label: str | None
) -> str | None:
    """The label of ``path`` for ``field`` after the review (``label`` when not reviewed)."""
    row = relabels.get((path, field))
    return label if row is None else row.new


def change_counts(relabels: Mapping[tuple[str, str], Relabel]) -> dict[str, int]:
    """Reviewed and changed counts: ``{"<field>:reviewed": n, "<field>:<old>-><new>": n}``."""
    counts: Counter[str] = Counter()
    for row in relabels.values():
        counts[f"{row.field}:reviewed"] += 1
        if row.changed:
            counts[f"{row.field}:{row.old}->{row.new}"] += 1
    return dict(sorted(counts.items()))
