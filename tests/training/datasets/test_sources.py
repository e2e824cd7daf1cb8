"""The shared folders as one table with sources, and the leave-group-out folds."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from cartag.training.datasets.dataset import holdout_mask
from cartag.training.datasets.relabels import read_relabels
from cartag.training.datasets.sources import (
    group_folds,
    leave_group_out_folds,
    merge_linked,
    read_sources,
    summary,
    write_labels_csv,
)
from cartag.training.evaluation.evaluate import labels_from_csv
from tests.support.images import jpeg_bytes
from tests.support.shared_root import make_data_root, write_file


def test_read_sources_labels_each_row_with_its_source(tmp_path: Path) -> None:
    type_labels = make_data_root(tmp_path)

    review = write_file(
        tmp_path / "relabels.csv",
        "path,field,old,new,reason\n"
        "vcr-train/Red/r1.jpg,color,Red,Burgundy,maroon body\n"
        "vcor-train/White/w1.jpg,type,Dealer,Stock,cut-out on white\n"
        "vcor-train/Orange/o1.jpg,color,Orange,Orange,orange body\n",
    )

    rows = read_sources(tmp_path, type_labels, relabels=read_relabels(review))

    as_tuples = [(r.path, r.image_type, r.color, r.source, r.group) for r in rows]
    # The review wins over the folders; vcor's unreviewed photos are real ones: Dealer.
    assert as_tuples == [
        ("vcr-train/Red/r1.jpg", "Stock", "Burgundy", "vcr", "vcr"),
        ("vcr-train/Grey/g1.jpg", None, "Grey", "vcr", "vcr"),
        ("vcor-train/Orange/o1.jpg", "Dealer", "Orange", "vcor", "vcor"),
        ("vcor-train/White/w1.jpg", "Stock", "White", "vcor", "vcor"),
        ("type-train/Stock/s1.jpg", "Stock", None, "type-train", "acme/cars"),
        ("type-train/Placeholder/p1.jpg", "Placeholder", None, "type-train", "acme/cars"),
        ("type-train/Dealer/d1.jpg", "Dealer", None, "type-train", "zed/lot"),
    ]
    assert summary(rows)["type-train"] == {"rows": 3, "image_type": 3, "color": 0, "groups": 2}


def test_the_written_csv_is_what_evaluate_reads(tmp_path: Path) -> None:
    rows = read_sources(tmp_path, make_data_root(tmp_path))

    out = write_labels_csv(rows, tmp_path / "out" / "all.csv")
    truth = labels_from_csv(out, tmp_path)

    assert len(truth.images) == 7 and truth.missing == []
    assert Counter(i.source for i in truth.images) == {"vcr": 2, "vcor": 2, "type-train": 3}
    by_name = {i.file.name: i for i in truth.images}
    assert (by_name["r1.jpg"].image_type, by_name["r1.jpg"].color) == ("Stock", "Red")
    assert (by_name["p1.jpg"].image_type, by_name["p1.jpg"].color) == ("Placeholder", None)


def test_bad_labels_and_empty_roots_are_refused(tmp_path: Path) -> None:
    type_labels = make_data_root(tmp_path)
    write_file(
        tmp_path / "vcor-train/labels.csv", "path,color,source_path\nOrange/o1.jpg,Mauve,x\n"
    )
    with pytest.raises(ValueError, match="vcor-train/labels.csv:2: 'Mauve'"):
        read_sources(tmp_path, type_labels)
    with pytest.raises(FileNotFoundError, match="vcr-train"):
        read_sources(tmp_path / "nothing", type_labels)


def test_merge_linked_joins_groups_that_share_a_duplicate() -> None:
    groups = ["b", "a", "c", "d", "c"]
    # Rows 0 and 2 are copies (b ~ c); row 3 is linked to itself only.
    assert merge_linked(groups, [[0, 2], [3]]) == ["b", "a", "b", "d", "b"]
    assert merge_linked(groups, []) == groups


def test_group_folds_keep_groups_whole_and_balance_rows() -> None:
    groups = ["big"] * 6 + ["mid"] * 4 + ["m2"] * 3 + ["s1"] * 2 + ["s2"] * 2 + ["s3"]

    fold = group_folds(groups, 3)

    for name in set(groups):
        assert len({int(f) for f, g in zip(fold, groups, strict=True) if g == name}) == 1
    assert sorted(np.bincount(fold, minlength=3).tolist()) == [6, 6, 6]
    assert np.array_equal(fold, group_folds(list(groups), 3))  # deterministic
    with pytest.raises(ValueError, match="4 groups"):
        group_folds(["a", "b", "c"], 4)


def test_leave_group_out_folds_keep_shared_images_on_one_side() -> None:
    groups = ["a", "a", "b", "c", "d", "e"]
    near = "0" * 15 + "1"  # one bit from "0" * 16
    hashes = ["0" * 16, "f" * 16, near, "0f" * 8, "f0" * 8, "33" * 8]

    fold = leave_group_out_folds(groups, hashes, 3, max_distance=2)

    assert fold[0] == fold[2]  # b holds a copy of one of a's images
    assert len(set(fold.tolist())) == 3
    apart = leave_group_out_folds(groups, hashes, 3, max_distance=0)
    assert apart[0] != apart[2]


def test_split_vcr_names_the_bundled_held_out_rows(tmp_path: Path) -> None:
    lines = ["path,color,weak_type,white_border_fraction"]
    for i in range(10):
        (tmp_path / "vcr-train/Red").mkdir(parents=True, exist_ok=True)
        (tmp_path / f"vcr-train/Red/{i}.jpg").write_bytes(jpeg_bytes())
        lines.append(f"vcr-train/Red/{i}.jpg,Red,Dealer,0.01")
    write_file(tmp_path / "vcr-train/labels.csv", "\n".join(lines) + "\n")
    type_labels = write_file(tmp_path / "t.csv", "path,weak_type,type,source,note\n")

    review = write_file(
        tmp_path / "r.csv",
        "path,field,old,new,reason\nvcr-train/Red/3.jpg,color,Red,Burgundy,maroon\n",
    )

    rows = read_sources(tmp_path, type_labels, split_vcr=True, relabels=read_relabels(review))

    # The split's strata stay the folders: a relabelled photo keeps its side.
    assert rows[3].color == "Burgundy"
    held = holdout_mask([r.path for r in rows], ["Red"] * 10)
    assert [r.source == "vcr held-out" for r in rows] == held.tolist()
    assert Counter(r.source for r in rows) == {"vcr held-out": 2, "vcr train split": 8}
    assert {r.group for r in rows} == {"vcr"}
