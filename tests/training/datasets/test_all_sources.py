"""The bundled build on every source: corpus assembly, per-source split, recolor rule."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cartag.imaging.keys import phash
from cartag.training.bundled.color_head import train_bundled_color_head
from cartag.training.bundled.corpus import build_corpus_all
from cartag.training.datasets import all_sources
from cartag.training.datasets.dataset import holdout_mask
from cartag.training.datasets.sources import read_sources
from cartag.training.heads.recolor import missing_targets
from cartag.vocab import COLORS, IMAGE_TYPES

BODIES = {
    "Red": (200, 20, 25),
    "Blue": (25, 50, 200),
    "Orange": (235, 120, 20),
    "Burgundy": (110, 15, 35),
    "Pink": (230, 60, 160),
}
VCR_COLORS = {"Red": 10, "Blue": 10, "Burgundy": 6}
VCOR_COLORS = {"Red": 10, "Orange": 10, "Pink": 10}
REPOS = [f"site-{i}" for i in range(7)]
TYPES = ("Dealer", "Stock", "Placeholder")


class MeanColor:
    """A stand-in backbone: mean RGB of the middle of the image, and its spread."""

    backbone_id = "mean-color@test"

    def embed_images(self, images: list[Image.Image]) -> np.ndarray:
        rows = []
        for image in images:
            a = np.asarray(image.convert("RGB").resize((64, 64)), dtype=np.float32) / 255
            rows.append([*a[16:48, 8:56].mean(axis=(0, 1)), *a.std(axis=(0, 1))])
        return np.asarray(rows, dtype=np.float32)


def _car(rng: np.random.Generator, body: tuple[int, int, int], path: Path) -> None:
    """A box 'car' of ``body`` color on noise (noise: distinct pHashes)."""
    pixels = rng.integers(60, 190, size=(64, 64, 3)).astype(np.uint8)
    shade = rng.uniform(0.85, 1.1)
    pixels[16:48, 8:56] = np.clip(np.asarray(body) * shade, 0, 255).astype(np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path, quality=92)


def make_root(root: Path) -> Path:
    """A small data root with vcr-train, vcor-train and type-train; returns vcr's type labels."""
    rng = np.random.default_rng(0)
    vcr_rows, type_rows = [], []
    for color, n in VCR_COLORS.items():
        for i in range(n):
            path = f"vcr-train/{color}/{i}.jpg"
            _car(rng, BODIES[color], root / path)
            vcr_rows.append([path, color, "Dealer", "0.0"])
            type_rows.append([path, "Dealer", "Stock" if i % 3 == 0 else "Dealer", "reviewed", ""])
    _write(root / "vcr-train/labels.csv", ["path", "color", "weak_type", "white_border_fraction"],
           vcr_rows)  # fmt: skip
    labels = root / "type_labels.csv"
    _write(labels, ["path", "weak_type", "type", "source", "note"], type_rows)
    vcor_rows = []
    for color, n in VCOR_COLORS.items():
        for i in range(n):
            _car(rng, BODIES[color], root / f"vcor-train/{color}/{i}.jpg")
            vcor_rows.append([f"{color}/{i}.jpg", color, f"orig/{i}.jpg"])
    _write(root / "vcor-train/labels.csv", ["path", "color", "source_path"], vcor_rows)
    typed_rows = []
    for r, repo in enumerate(REPOS):
        for i in range(3 + r % 3):
            kind = TYPES[(r + i) % 3]
            pixels = rng.integers(0, 255, size=(48, 64, 3)).astype(np.uint8)
            file = root / f"type-train/{repo}/{i}.jpg"
            file.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(pixels).save(file, quality=92)
            typed_rows.append([f"{repo}/{i}.jpg", kind, repo, "x", "0" * 40, ""])
    _write(root / "type-train/labels.csv",
           ["path", "type", "repo", "source_path", "commit", "note"], typed_rows)  # fmt: skip
    return labels


def _write(path: Path, header: list[str], rows: list[list[str]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(header)
        writer.writerows(rows)


def _hashes(root: Path, paths: list[str]) -> list[str]:
    out = []
    for p in paths:
        with Image.open(root / p) as image:
            out.append(phash(image.convert("RGB")))
    return out


def test_held_out_rows_follow_each_sources_rule(tmp_path: Path) -> None:
    labels = make_root(tmp_path)
    rows = read_sources(tmp_path, labels, relabels={})
    fold = all_sources.type_train_folds(rows, _hashes(tmp_path, [r.path for r in rows]))
    held = all_sources.source_holdout(rows, fold)
    src = np.asarray([r.source for r in rows])

    # vcr: the same photos as the single-folder build (and as read_sources' split).
    vcr = np.flatnonzero(src == "vcr")
    paths = [rows[i].path for i in vcr]
    assert np.array_equal(held[vcr], holdout_mask(paths, [p.split("/")[1] for p in paths]))
    split = read_sources(tmp_path, labels, relabels={}, split_vcr=True)
    assert [r.source == "vcr held-out" for r in split[: len(vcr)]] == held[vcr].tolist()
    # vcor: round(0.2 * 10) per color folder.
    vcor = [
        r.path.split("/")[1] for r, h in zip(rows, held, strict=True) if h and r.source == "vcor"
    ]
    assert sorted(vcor) == sorted([c for c in VCOR_COLORS for _ in range(2)])
    # type-train: whole repositories, the ones of fold 0.
    typed = np.flatnonzero(src == "type-train")
    by_repo: dict[str, set[bool]] = {}
    for i in typed:
        by_repo.setdefault(rows[i].group, set()).add(bool(held[i]))
    assert all(len(v) == 1 for v in by_repo.values())
    assert 0 < sum(True in v for v in by_repo.values()) < len(REPOS)
    assert np.array_equal(held[typed], fold[typed] == all_sources.HELD_OUT_FOLD)


def test_corpus_of_all_sources_and_placeholders(tmp_path: Path) -> None:
    labels = make_root(tmp_path)

    corpus = build_corpus_all(
        tmp_path, all_sources.ALL, MeanColor(), tmp_path / "cache", 35, 0, labels
    )

    n_vcr, n_vcor, n_typed = (
        sum(VCR_COLORS.values()),
        sum(VCOR_COLORS.values()),
        len([1 for r in range(len(REPOS)) for _ in range(3 + r % 3)]),
    )
    assert corpus.sources == (
        ["vcr"] * n_vcr + ["vcor"] * n_vcor + ["type-train"] * n_typed + ["placeholder"] * 35
    )
    src = np.asarray(corpus.sources)
    # Type-train has no colors, placeholders neither; vcor types default to Dealer.
    assert (corpus.color_idx[src == "type-train"] == -1).all()
    assert (corpus.color_idx[src == "placeholder"] == -1).all()
    assert (corpus.type_idx[src == "vcor"] == IMAGE_TYPES.index("Dealer")).all()
    assert (corpus.type_idx[src == "placeholder"] == IMAGE_TYPES.index("Placeholder")).all()
    assert (corpus.type_idx >= 0).all()
    assert corpus.files[-1] is None and len(corpus.hashes) == n_vcr + n_vcor + n_typed
    assert corpus.emb.shape == (len(corpus.keys), 6)
    assert 0 < corpus.holdout[src == "placeholder"].sum() < 35
    counts = all_sources.counts(corpus.sources, corpus.holdout, corpus.color_idx, COLORS)
    assert counts["vcor"]["held_out"] == {"Orange": 2, "Pink": 2, "Red": 2}
    assert "type-train" in counts and counts["type-train"] == {"train": {}, "held_out": {}}

    only = build_corpus_all(tmp_path, ["vcr", "type-train"], MeanColor(), tmp_path / "cache", 7, 0,
                            labels)  # fmt: skip
    assert "vcor" not in only.sources
    # The split of a source does not depend on which others are used.
    assert np.array_equal(only.holdout[:n_vcr], corpus.holdout[:n_vcr])


def test_a_missing_source_is_an_error(tmp_path: Path) -> None:
    labels = make_root(tmp_path)
    (tmp_path / "vcor-train/labels.csv").unlink()
    with pytest.raises(FileNotFoundError, match="vcor"):
        build_corpus_all(tmp_path, all_sources.ALL, MeanColor(), tmp_path / "cache", 7, 0, labels)


def test_parse_sources() -> None:
    assert all_sources.parse_sources("vcor, vcr") == ["vcr", "vcor"]
    with pytest.raises(ValueError, match="nope"):
        all_sources.parse_sources("vcr,nope")


def test_recolor_rule_only_colors_without_real_photos_unless_topped_up() -> None:
    colors = ["Red"] * 5 + ["Burgundy"] * 2 + ["Orange"] * 40
    assert missing_targets(colors) == ["Purple"]
    assert missing_targets(colors, min_real=3) == ["Burgundy", "Purple"]
    assert missing_targets(colors, min_real=41) == ["Orange", "Burgundy", "Purple"]
    with pytest.raises(ValueError):
        missing_targets(colors, min_real=0)


def test_color_head_on_all_sources_recolors_only_the_missing_color(tmp_path: Path) -> None:
    # Burgundy has a few real training photos (vcr), Orange many (vcor): only
    # Purple, which no source has, gets recolored photos.
    labels = make_root(tmp_path)
    embedder = MeanColor()
    corpus = build_corpus_all(tmp_path, all_sources.ALL, embedder, tmp_path / "cache", 7, 0, labels)

    head, metrics = train_bundled_color_head(
        corpus, tmp_path, tmp_path / "cache", embedder.embed_images, l2=0.1, recolored_per_color=6
    )

    rule = metrics["recolor_rule"]
    assert rule["recolored_colors"] == ["Purple"]
    assert rule["real_training_photos"]["Burgundy"] > 0
    assert metrics["recolored"]["train_counts"] == {"Purple": 6}
    colored = corpus.color_idx >= 0
    assert metrics["held_out"]["n"] == int((corpus.holdout & colored).sum())


def test_placeholder_precision_counts_every_real_image_called_placeholder() -> None:
    ph = IMAGE_TYPES.index("Placeholder")
    y = np.asarray([ph, ph, 0, 1, -1, ph])
    pred = np.asarray([ph, 0, ph, 1, ph, ph])
    real = np.asarray([True, True, True, True, True, False])

    out = all_sources.placeholder_precision(y, pred, ph, real)

    assert out == {"tp": 2, "false_positives": 2, "precision": 0.5, "recall": round(2 / 3, 4)}
