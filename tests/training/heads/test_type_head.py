"""The type-head training entry point."""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from cartag.training.heads.type_head import train_type_head
from cartag.vocab import IMAGE_TYPES


@dataclass
class _Corpus:
    keys: list[str]
    emb: np.ndarray
    family: list[str]
    holdout: np.ndarray


def _mean_color(images: list[Image.Image]) -> np.ndarray:
    # A stand-in backbone: mean RGB and its spread, enough to tell cards from "photos".
    rows = []
    for image in images:
        a = np.asarray(image.convert("RGB").resize((32, 32)), dtype=np.float32) / 255
        rows.append([*a.mean(axis=(0, 1)), *a.std(axis=(0, 1)), 0.0, 0.0])
    return np.asarray(rows, dtype=np.float32)


def test_train_type_head_end_to_end_on_a_toy_corpus(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    n_real, n_ph = 90, 30
    types = rng.choice(["Dealer", "Stock"], size=n_real)
    keys = [f"vcr-train/Red/{i}.jpg" for i in range(n_real)]
    with (tmp_path / "labels.csv").open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["path", "weak_type", "type", "source", "note"])
        for i, (key, t) in enumerate(zip(keys, types, strict=True)):
            weak = "" if i % 9 == 0 else ("Stock" if i % 10 == 1 else t)
            source = "weak_rule" if weak == t else "reviewed"
            writer.writerow([key, weak, t, source, ""])
    # Real rows: mean colour near 0.3 (Dealer) or 0.7 (Stock) with noise; placeholders: flat.
    centre = np.where(types == "Dealer", 0.3, 0.7)[:, None]
    real = np.zeros((n_real, 8))
    real[:, :3] = centre + rng.normal(0, 0.08, (n_real, 3))
    real[:, 3:6] = rng.uniform(0.1, 0.3, (n_real, 3))
    ph = np.zeros((n_ph, 8))
    ph[:, :3] = rng.uniform(0, 1, (n_ph, 3))
    corpus = _Corpus(
        keys=keys + [f"placeholder/0/{i:04d}" for i in range(n_ph)],
        emb=np.concatenate([real, ph]).astype(np.float32),
        family=[""] * n_real + ["blank"] * n_ph,
        holdout=np.arange(n_real + n_ph) % 5 == 0,
    )
    hashes = [f"{int(v):016x}" for v in rng.integers(0, 2**63, size=n_real)]
    hashes[7] = hashes[5]  # a near-duplicate pair straddling the split (row 5 is held out)

    head, metrics = train_type_head(
        corpus,
        tmp_path,
        _mean_color,
        labels_path=tmp_path / "labels.csv",
        n_eval_placeholders=8,
        hashes=hashes,
    )
    assert head.labels == tuple(IMAGE_TYPES)
    assert head.temperature == metrics["calibration"]["temperature"] > 0
    assert metrics["near_duplicates"]["train_rows_dropped_for_held_out_twin"] == 1
    assert metrics["held_out"]["n"] == int(corpus.holdout.sum())
    assert metrics["label_cleaning"]["n"] == n_real
    assert metrics["placeholder"]["n_real_held_out"] == int(corpus.holdout[:n_real].sum())
    assert set(metrics["l2_cv_balanced_accuracy"]) == {"0.03", "0.1", "0.3", "1.0", "3.0", "10.0"}
    assert len(metrics["low_confidence_out_of_fold"]) == len(metrics["low_confidence_held_out"])
