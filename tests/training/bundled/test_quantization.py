"""The int8 build's choices: which photos calibrate, and the corpus embedded again."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from cartag.training.bundled.corpus import PLACEHOLDER_SOURCE, Corpus, build_corpus_all, reembed
from cartag.training.bundled.quantization import calibration_rows
from cartag.training.datasets import all_sources
from tests.training.datasets.test_all_sources import MeanColor, make_root


def _corpus(root: Path) -> Corpus:
    labels = make_root(root)
    return build_corpus_all(root, all_sources.ALL, MeanColor(), root / "cache", 7, 0, labels)


def test_calibration_photos_are_training_photos_shared_by_the_sources(tmp_path: Path) -> None:
    corpus = _corpus(tmp_path)

    rows = calibration_rows(corpus, 20)

    assert len(rows) == len(set(rows)) == 20
    assert not corpus.holdout[rows].any()
    assert all(corpus.files[i] is not None for i in rows)
    per_source = [sum(corpus.sources[i] == s for i in rows) for s in all_sources.ALL]
    assert per_source == [7, 7, 6]
    assert calibration_rows(corpus, 20) == rows  # deterministic
    # A smaller draw is the start of each source's order (the order does not depend on n).
    small = calibration_rows(corpus, 6)
    assert set(small) <= set(rows)


def test_calibration_takes_what_a_source_has(tmp_path: Path) -> None:
    corpus = _corpus(tmp_path)
    rows = calibration_rows(corpus, 10_000)
    real_train = [
        i for i, s in enumerate(corpus.sources) if s != PLACEHOLDER_SOURCE and not corpus.holdout[i]
    ]
    assert sorted(rows) == real_train


class Doubled(MeanColor):
    """Another backbone: the stand-in's features, doubled."""

    backbone_id = "doubled@test"

    def embed_images(self, images: list[Image.Image]) -> np.ndarray:
        return 2 * super().embed_images(images)


def test_reembed_keeps_the_rows_and_replaces_the_embeddings(tmp_path: Path) -> None:
    corpus = _corpus(tmp_path)

    again = reembed(corpus, Doubled(), tmp_path / "cache", seed=0)

    assert again.keys == corpus.keys and again.sources == corpus.sources
    assert np.array_equal(again.holdout, corpus.holdout)
    np.testing.assert_allclose(again.emb, 2 * corpus.emb, rtol=1e-6)
    assert list((tmp_path / "cache").glob("embeddings-doubled_test-*.npz"))
