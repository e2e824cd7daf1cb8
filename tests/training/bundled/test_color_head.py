"""The bundled color head: real photos plus recolored ones for the colors the set lacks."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
from PIL import Image

from cartag.models.color_features import color_features_batch
from cartag.training.bundled.color_head import train_bundled_color_head
from cartag.training.bundled.corpus import Corpus
from cartag.vocab import COLORS

BODIES = {
    "Red": (200, 20, 25),
    "Blue": (25, 50, 200),
    "Green": (30, 160, 50),
    "Yellow": (235, 205, 20),
}


def _mean_color(images: list[Image.Image]) -> np.ndarray:
    # A stand-in backbone: the mean RGB of the middle of the image.
    return np.asarray(
        [np.asarray(im.convert("RGB"), dtype=np.float32)[16:48, 8:56].mean(axis=(0, 1)) / 255
         for im in images],
        dtype=np.float32,
    )  # fmt: skip


def _data(tmp_path: Path) -> tuple[Path, Corpus]:
    """16 box 'cars' per color on noisy grey; every Yellow and Green photo is held out."""
    rng = np.random.default_rng(0)
    data_dir = tmp_path / "vcr-train"
    data_dir.mkdir()
    paths, colors = [], []
    for color, body in BODIES.items():
        for i in range(16):
            pixels = rng.integers(90, 150, size=(64, 64, 3)).astype(np.uint8)
            shade = rng.uniform(0.8, 1.1)
            pixels[16:48, 8:56] = np.clip(np.asarray(body) * shade, 0, 255).astype(np.uint8)
            path = f"vcr-train/{color}/{i}.png"
            (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(pixels).save(tmp_path / path)
            paths.append(path)
            colors.append(color)
    with (data_dir / "labels.csv").open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["path", "color", "weak_type", "white_border_fraction"])
        writer.writerows([p, c, "Dealer", "0.0"] for p, c in zip(paths, colors, strict=True))
    images = [Image.open(tmp_path / p) for p in paths]
    corpus = Corpus(
        keys=paths,
        strata=colors,
        emb=_mean_color(images),
        type_idx=np.zeros(len(paths), dtype=np.int64),
        color_idx=np.asarray([COLORS.index(c) for c in colors]),
        family=[""] * len(paths),
        holdout=np.asarray([c in ("Yellow", "Green") for c in colors]),
        data_hash="0" * 64,
    )
    return data_dir, corpus


def test_recolored_photos_teach_the_missing_colors(tmp_path: Path) -> None:
    data_dir, corpus = _data(tmp_path)
    head, metrics = train_bundled_color_head(
        corpus, data_dir, tmp_path / "cache", _mean_color, recolored_per_color=6
    )
    recolored = metrics["recolored"]
    assert recolored["train_counts"] == {"Orange": 6, "Burgundy": 6, "Purple": 6}
    counts = head.metadata["train_counts"]
    assert counts["Orange"] == counts["Burgundy"] == counts["Purple"] == 6
    assert counts["Red"] == 16 and counts["Yellow"] == 0
    # Recolored checks come from held-out photos only: Orange from the Yellow ones
    # (no held-out Red, Blue or Pink photo to make Burgundy or Purple from).
    assert recolored["held_out_counts"] == {"Orange": 2}
    assert set(recolored["held_out_recall"]) == {"Orange"}
    # The held-out report is on real photos only.
    assert metrics["held_out"]["n"] == 32
    assert "Orange" not in head.metadata.get("absent_labels", [])

    # An orange car drawn like the training photos is now called Orange.
    rng = np.random.default_rng(1)
    orange = []
    for _ in range(3):
        pixels = rng.integers(90, 150, size=(64, 64, 3)).astype(np.uint8)
        pixels[16:48, 8:56] = (235, 110, 15)
        orange.append(Image.fromarray(pixels))
    x = np.concatenate([_mean_color(orange), color_features_batch(orange)], axis=1)
    assert (head.predict_proba(x).argmax(axis=1) == COLORS.index("Orange")).all()


def test_colors_with_real_photos_are_not_recolored(tmp_path: Path) -> None:
    data_dir, corpus = _data(tmp_path)
    # Call the Blue photos Purple: Purple now has real training photos.
    purple = COLORS.index("Purple")
    corpus.color_idx = np.where(corpus.color_idx == COLORS.index("Blue"), purple, corpus.color_idx)
    labels = (data_dir / "labels.csv").read_text().replace(",Blue,", ",Purple,")
    (data_dir / "labels.csv").write_text(labels)
    head, metrics = train_bundled_color_head(
        corpus, data_dir, tmp_path / "cache", _mean_color, recolored_per_color=6
    )
    assert metrics["recolored"]["train_counts"] == {"Orange": 6, "Burgundy": 6}
    assert head.metadata["train_counts"]["Purple"] == 16


def test_no_recolored_photos_leaves_the_missing_colors_absent(tmp_path: Path) -> None:
    data_dir, corpus = _data(tmp_path)
    head, metrics = train_bundled_color_head(
        corpus, data_dir, tmp_path / "cache", _mean_color, recolored_per_color=0
    )
    assert "recolored" not in metrics
    assert {"Orange", "Burgundy", "Purple"} <= set(head.metadata["absent_labels"])
