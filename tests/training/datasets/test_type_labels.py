"""The cleaned type labels (type_labels.csv)."""

from __future__ import annotations

from pathlib import Path

import pytest

from cartag.training.datasets.type_labels import LABEL_SOURCES, cleaning_counts, read_type_labels


def test_shipped_labels_are_complete_and_consistent() -> None:
    labels = read_type_labels()
    assert len(labels) == 2883
    assert {v.type for v in labels.values()} == {"Dealer", "Stock"}
    assert {v.source for v in labels.values()} <= set(LABEL_SOURCES)
    for v in labels.values():
        assert v.path.startswith("vcr-train/") and v.path.endswith(".jpg")
        if v.source == "weak_rule":
            assert v.type == v.weak_type  # a kept rule label is the rule's answer
        if v.source == "model_confident":
            assert v.weak_type is None  # the model only fills rows the rule left empty
    counts = cleaning_counts(labels)
    total = counts["kept"] + counts["corrected"] + counts["filled_reviewed"]
    assert total + counts["filled_model"] == counts["n"] == 2883
    assert sum(counts["corrections"].values()) == counts["corrected"] > 0


def test_bad_label_rows_are_rejected(tmp_path: Path) -> None:
    path = tmp_path / "labels.csv"
    header = "path,weak_type,type,source,note\n"
    path.write_text(header + "vcr-train/Red/a.jpg,Dealer,Truck,reviewed,\n")
    with pytest.raises(ValueError, match="bad type"):
        read_type_labels(path)
    row = "vcr-train/Red/a.jpg,Dealer,Stock,reviewed,\n"
    path.write_text(header + row + row)
    with pytest.raises(ValueError, match="twice"):
        read_type_labels(path)
