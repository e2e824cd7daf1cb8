"""What a bundled build records about itself: data sources, label notes, split rules, command.

The texts go into ``config.json`` and the heads' metadata
(:func:`cartag.training.bundled.build.train_bundled`), and from there into the model card.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any

from cartag.training.bundled.corpus import PLACEHOLDER_SOURCE, Corpus
from cartag.training.datasets import all_sources
from cartag.training.datasets.relabels import RELABELS_PATH, change_counts, read_relabels
from cartag.training.datasets.sources import FOLDERS
from cartag.training.datasets.type_labels import TYPE_LABELS_PATH
from cartag.vocab import COLORS, IMAGE_TYPES

SOURCE = (
    "vcr-train: 2,883 web-scraped car photos from the public GitHub repository "
    "DananauRazvan/Vehicle-Color-Recognition (dataset/train/), color folders mapped to the "
    "cartag vocabulary (silver -> Grey). The repository states no licence: research and "
    "evaluation use only; the images are not redistributed, only these head weights."
)
SOURCES_TEXT = {
    "vcr": SOURCE,
    "vcor": (
        "vcor-train: 4,018 web-sourced car photos (a copy of the VCoR dataset in the public "
        "GitHub repository ndtands/CNN_Color_Car_Pytorch, dataset/train/), near-duplicates "
        "of vcr-train removed; no licence stated: research and evaluation use only."
    ),
    "type-train": (
        "type-train: 777 images with type labels (Dealer/Stock/Placeholder, including real "
        "placeholders and logos) from 80+ public GitHub repositories of dealer, rental, "
        "configurator and marketplace sites; mostly unlicensed, logos are trademarks: "
        "training/evaluation only, never redistributed."
    ),
}
TYPE_NOTE_ALL = (
    "Image-type labels follow LABELS.md: vcr types from the reviewed "
    "cartag/training/datasets/type_labels.csv, vcor photos Dealer unless reviewed "
    "(cut-outs on white: "
    "Stock; relabels.csv), type-train's own labels (looked at, against LABELS.md). "
    "Placeholder examples are type-train's real placeholders and logos plus synthetic ones "
    "(cartag.imaging.placeholders); placeholder recall is also measured on independent "
    "designs (cartag.training.datasets.placeholders_eval) that are never trained on."
)
TYPE_NOTE = (
    "Image-type labels for real photos are cleaned labels "
    "(cartag/training/datasets/type_labels.csv): "
    "the dataset's weak_type rule (white-border fraction > 0.25 -> Stock, < 0.05 -> Dealer), "
    "ranked by confident learning on out-of-fold predictions, reviewed by eye (all held-out "
    "photos and the most suspicious training ones) and completed where the rule abstains; "
    "held-out type metrics are against these cleaned labels. Convention: Stock is a real "
    "vehicle design shown whole on a plain or seamless backdrop (studio shot, press cut-out "
    "or computer render, white, grey or dark); Dealer is a real photo in a real setting, and "
    "also toys, scale models, ride-ons and cartoons, which the data README lists among the "
    "weak rule's errors on white (303 such images were moved from Stock to Dealer on "
    "2026-12-02 after a review of every Stock-labelled image). Placeholder examples are "
    "synthetic (cartag.imaging.placeholders); placeholder recall is measured on independent "
    "designs (cartag.training.datasets.placeholders_eval) that are never trained on."
)


def split_rules(sources: Sequence[str]) -> str:
    """The held-out split rule of each source (placeholders last), as one line."""
    rules = all_sources.SPLIT_RULES
    return "; ".join(f"{s}: {rules[s]}" for s in [*sources, PLACEHOLDER_SOURCE])


def command_line(
    sources: Sequence[str] | None,
    finetuned: bool,
    recolor_min_real: int,
    calibration: str | None = None,
) -> str:
    """The command that rebuilds the model (data paths as placeholders).

    ``calibration``: the int8 calibration method, None for a build without int8.
    """
    if sources is None:
        command = "cartag models build-bundled --data <vcr-train> --out <dir>"
    else:
        command = (
            "cartag models build-bundled --data <shared data root> "
            f"--sources {','.join(sources)} --out <dir>"
        )
        if recolor_min_real != 1:
            command += f" --recolor-min-real {recolor_min_real}"
        if calibration is None:
            command += " --no-int8"
        elif calibration != "minmax":
            command += f" --calibration {calibration}"
    return command + (" --backbone-weights <finetune .npz>" if finetuned else "")


def all_sources_config(
    corpus: Corpus, sources: Sequence[str], recolor_min_real: int
) -> dict[str, Any]:
    """What a build on several sources records: sources, counts, label hashes, split."""
    return {
        "sources": {s: FOLDERS[s] for s in sources},
        "n_real_by_source": {s: corpus.sources.count(s) for s in sources},
        "counts": {
            "image_type": all_sources.counts(
                corpus.sources, corpus.holdout, corpus.type_idx, IMAGE_TYPES
            ),
            "color": all_sources.counts(corpus.sources, corpus.holdout, corpus.color_idx, COLORS),
        },
        "label_review": change_counts(read_relabels()),
        "labels_sha256": {
            "type_labels.csv": hashlib.sha256(TYPE_LABELS_PATH.read_bytes()).hexdigest(),
            "relabels.csv": hashlib.sha256(RELABELS_PATH.read_bytes()).hexdigest(),
        },
        "labels": (
            "cartag.training.datasets.sources.read_sources: vcr types from "
            "type_labels.csv, vcor types "
            "reviewed else Dealer, type-train types from its labels.csv; vcr/vcor colors from "
            "their folders with relabels.csv applied; type-train has no colors"
        ),
        "split_rules": {s: all_sources.SPLIT_RULES[s] for s in [*sources, PLACEHOLDER_SOURCE]},
        "recolor_rule": (
            f"target colors with fewer than {recolor_min_real} real training photo(s) get "
            "recolored photos"
        ),
    }
