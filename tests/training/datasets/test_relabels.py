"""The packaged label review (relabels.csv) and its reader."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from cartag.training.datasets.relabels import change_counts, read_relabels, relabel

DATA = Path(__file__).resolve().parents[4] / "shared" / "data"


def test_shipped_relabels_are_consistent() -> None:
    rows = read_relabels()
    counts = change_counts(rows)
    # Every review decision is recorded, kept ones too: more reviewed than changed.
    assert counts["color:reviewed"] > counts.get("color:Red->Burgundy", 0) > 0
    assert counts["type:Dealer->Stock"] > 0
    for (path, field), row in rows.items():
        assert path.startswith(("vcr-train/", "vcor-train/")) and path.endswith(".jpg")
        # vcr's types live in type_labels.csv, with the review in its note column.
        assert not (field == "type" and path.startswith("vcr-train/"))
        if field == "type":
            assert row.old == "Dealer"  # vcor has no types: Dealer is the presumption


def test_shipped_relabels_start_from_the_source_labels() -> None:
    if not (DATA / "vcor-train" / "labels.csv").exists():
        pytest.skip(f"shared data not found at {DATA}")
    folder_color: dict[str, str] = {}
    for name in ("vcr-train", "vcor-train"):
        with (DATA / name / "labels.csv").open(newline="") as fh:
            for row in csv.DictReader(fh):
                path = row["path"] if row["path"].startswith(name) else f"{name}/{row['path']}"
                folder_color[path] = row["color"]
    for (path, field), row in read_relabels().items():
        assert path in folder_color, path
        if field == "color":
            assert row.old == folder_color[path], path


def test_relabel_reads_overrides_and_refuses_bad_rows(tmp_path: Path) -> None:
    good = tmp_path / "relabels.csv"
    good.write_text(
        "path,field,old,new,reason\n"
        "a/x.jpg,color,Red,Burgundy,maroon body\n"
        "a/y.jpg,type,Dealer,Dealer,white booth with floor\n"
    )
    rows = read_relabels(good)
    assert relabel(rows, "a/x.jpg", "color", "Red") == "Burgundy"
    assert relabel(rows, "a/y.jpg", "type", None) == "Dealer"
    assert relabel(rows, "a/z.jpg", "color", "Blue") == "Blue"
    assert change_counts(rows) == {
        "color:Red->Burgundy": 1,
        "color:reviewed": 1,
        "type:reviewed": 1,
    }
    for body, message in (
        ("a.jpg,colour,Red,Red,x\n", "not color or type"),
        ("a.jpg,color,Red,Maroon,x\n", "'Maroon' is not a color"),
        ("a.jpg,color,Red,Red,x\na.jpg,color,Red,Burgundy,y\n", "appears twice"),
    ):
        bad = tmp_path / "bad.csv"
        bad.write_text("path,field,old,new,reason\n" + body)
        with pytest.raises(ValueError, match=message):
            read_relabels(bad)
