"""A tiny shared-data root (vcr-train, vcor-train, type-train) for the sources readers."""

from __future__ import annotations

from pathlib import Path

from tests.support.images import jpeg_bytes


def write_file(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def make_data_root(root: Path) -> Path:
    """Two vcr, two vcor and three type-train images, each folder with its labels.csv.

    Returns:
        The type-labels CSV for the vcr rows (one vcr row has no type label).
    """
    files = [
        "vcr-train/Red/r1.jpg",
        "vcr-train/Grey/g1.jpg",
        "vcor-train/Orange/o1.jpg",
        "vcor-train/White/w1.jpg",
        "type-train/Stock/s1.jpg",
        "type-train/Placeholder/p1.jpg",
        "type-train/Dealer/d1.jpg",
    ]
    for rel in files:
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(jpeg_bytes())
    write_file(
        root / "vcr-train/labels.csv",
        "path,color,weak_type,white_border_fraction\n"
        "vcr-train/Red/r1.jpg,Red,Dealer,0.01\nvcr-train/Grey/g1.jpg,Grey,,0.1\n",
    )
    write_file(
        root / "vcor-train/labels.csv",
        "path,color,source_path\nOrange/o1.jpg,Orange,x\nWhite/w1.jpg,White,y\n",
    )
    write_file(
        root / "type-train/labels.csv",
        "path,type,repo,source_path,commit,note\n"
        "Stock/s1.jpg,Stock,acme/cars,a,c,\nPlaceholder/p1.jpg,Placeholder,acme/cars,b,c,\n"
        "Dealer/d1.jpg,Dealer,zed/lot,c,c,\n",
    )
    return write_file(
        root / "type_labels.csv",
        "path,weak_type,type,source,note\nvcr-train/Red/r1.jpg,Dealer,Stock,reviewed,on white\n",
    )
