"""Model-card sections of a build on several sources."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from cartag.models.classifier import BUNDLED_DIR
from cartag.training.evaluation import card_sources
from cartag.training.evaluation.card import render_card


def test_label_section_counts_the_review() -> None:
    review = {
        "color:Red->Burgundy": 18,
        "color:reviewed": 900,
        "type:Dealer->Stock": 421,
        "type:reviewed": 683,
    }
    text = "\n".join(card_sources.label_section({"label_review": review}))
    assert "683 photos looked at, 421 cut-outs on white made Stock" in text
    assert "900 photos looked at" in text and "Red->Burgundy 18" in text
    assert card_sources.label_section({}) == []


def test_offset_line_reports_the_out_of_fold_change() -> None:
    record = {
        "offset": 0.5,
        "scored": "real images only",
        "out_of_fold": {
            "0.0": {"precision": 0.97, "recall": 0.98},
            "0.5": {"precision": 0.995, "recall": 0.975},
        },
    }
    (line,) = card_sources.offset_line({"placeholder_offset": record})
    assert "lowered by 0.5" in line and "0.970 -> 0.995" in line and "0.980 -> 0.975" in line
    assert card_sources.offset_line({}) == []


def test_card_shows_the_cross_source_summary_only_when_present(tmp_path: Path) -> None:
    model = tmp_path / "model"
    shutil.copytree(BUNDLED_DIR, model)
    (model / card_sources.CROSS_SOURCE_NAME).unlink()
    assert "## Cross-source figures" not in render_card(model)
    row = {
        "protocol": "type: leave-repo-out (5 folds)",
        "test_set": "type-train",
        "n": 7,
        "accuracy": 0.5,
        "macro_recall": 0.25,
        "lowest": "Dealer 0.000",
        "placeholder_precision": None,
        "targets": "not met",
    }
    summary = {"command": "python -m benchmarks.cross_source", "rows": [row]}
    (model / card_sources.CROSS_SOURCE_NAME).write_text(json.dumps(summary))
    card = render_card(model)
    assert "| type: leave-repo-out (5 folds) | type-train | 7 | 0.500 | 0.250 |" in card
    assert "Not every cross-source target is met" in card
