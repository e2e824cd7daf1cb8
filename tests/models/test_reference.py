"""The training reference: k-means centroids of the training split, novelty quantiles of
the held-out split, saved beside the weights and loaded with the model."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest

from cartag.models.reference import (
    REFERENCE_NAME,
    DriftReference,
    build_reference,
    fit_centroids,
    load_reference,
    save_reference,
)

DIM = 64


def _clusters(n: int, centers: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """(n, DIM) non-negative points around ``centers`` (like post-ReLU embeddings)."""
    picks = centers[rng.integers(len(centers), size=n)]
    return np.abs(picks + rng.normal(scale=0.25, size=(n, DIM))).astype(np.float32)


def _centers(seed: int, k: int = 12) -> np.ndarray:
    return np.abs(np.random.default_rng(seed).normal(size=(k, DIM))) * 2


def _reference() -> DriftReference:
    rng = np.random.default_rng(0)
    centers = _centers(1)
    return build_reference(
        _clusters(3000, centers, rng), _clusters(1000, centers, rng), embedding_id="b@1", k=32
    )


def test_centroids_are_unit_vectors_of_the_training_clusters() -> None:
    rng = np.random.default_rng(0)
    points = _clusters(500, _centers(1), rng)
    centroids = fit_centroids(points, 16, seed=0)
    assert centroids.shape == (16, DIM)
    np.testing.assert_allclose(np.linalg.norm(centroids, axis=1), 1, atol=1e-5)
    # Seeded: the same centroids again.
    np.testing.assert_array_equal(centroids, fit_centroids(points, 16, seed=0))
    assert fit_centroids(points[:5], 16).shape == (5, DIM)  # never more centroids than points


def test_about_5_percent_of_in_distribution_images_are_far_and_a_shift_is_mostly_far() -> None:
    reference = _reference()
    assert reference.centroids.dtype == np.float16
    assert reference.centroids.shape == (32, DIM)
    q = reference.quantiles
    assert q["p50"] <= q["p90"] <= q["p95"] <= q["p99"]
    assert reference.far_threshold == q["p95"]
    rng = np.random.default_rng(7)
    same = _clusters(4000, _centers(1), rng)  # fresh draws of the training distribution
    novelty = reference.novelty(same)
    assert novelty.shape == (4000,) and novelty.dtype == np.float32
    assert 0.03 < reference.far(same).mean() < 0.08
    other = _clusters(1000, _centers(99), rng)  # another source
    assert reference.far(other).mean() > 0.5
    assert reference.novelty(other).mean() > novelty.mean()


def test_novelty_is_the_cosine_distance_to_the_nearest_centroid() -> None:
    centroids = np.eye(3, dtype=np.float16)
    reference = DriftReference(centroids, {}, 0.1, "b@1")
    emb = np.array([[2.0, 0, 0], [1, 1, 0], [0, 0, 5]], dtype=np.float32)
    np.testing.assert_allclose(reference.novelty(emb), [0, 1 - 2**-0.5, 0], atol=1e-3)
    with pytest.raises(ValueError, match="4-d"):
        reference.novelty(np.ones((1, 4)))


def test_it_measures_its_backbone_and_that_backbones_int8_embeddings_only() -> None:
    reference = DriftReference(np.eye(2, dtype=np.float16), {}, 0.1, "lite0-ft@66f7")
    assert reference.serves("lite0-ft@66f7")
    assert reference.serves("lite0-ft@66f7+int8@e3ed")
    assert not reference.serves("lite0-ft@aaaa")
    assert not reference.serves(None)


def test_saved_and_loaded_beside_the_weights(tmp_path: Path) -> None:
    reference = _reference()
    block = save_reference(reference, tmp_path, built_from={"sources": ["synthetic"]}, seed=3)
    assert block["file"] == REFERENCE_NAME and block["k"] == 32 and block["seed"] == 3
    assert block["far_threshold"] == reference.far_threshold
    config = json.loads(json.dumps({"reference": block}))  # as read back from config.json
    loaded = load_reference(tmp_path, config)
    assert loaded is not None
    emb = np.random.default_rng(3).random((20, DIM))
    np.testing.assert_array_equal(loaded.novelty(emb), reference.novelty(emb))
    assert loaded.quantiles == reference.quantiles
    assert (tmp_path / REFERENCE_NAME).stat().st_size < 1_000_000
    assert load_reference(tmp_path, {}) is None  # a folder without one serves without


def test_a_changed_or_missing_reference_serves_without_novelty(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    block = save_reference(_reference(), tmp_path, built_from={})
    path = tmp_path / REFERENCE_NAME
    path.write_bytes(path.read_bytes()[:-10])
    with caplog.at_level(logging.WARNING):
        assert load_reference(tmp_path, {"reference": block}) is None
    assert "sha256" in caplog.text and "add-reference" in caplog.text
    path.unlink()
    assert load_reference(tmp_path, {"reference": block}) is None
    assert load_reference(tmp_path, {"reference": {**block, "file": "../x.npz"}}) is None


def test_the_recorded_far_threshold_is_read_without_the_centroids() -> None:
    from cartag.models.reference import recorded_far_threshold

    assert recorded_far_threshold({"reference": {"far_threshold": 0.26}}) == 0.26
    assert recorded_far_threshold({"reference": {"far_threshold": 1}}) == 1.0
    for config in (
        {},
        {"reference": None},
        {"reference": {"far_threshold": True}},
        {"reference": {"far_threshold": float("nan")}},
        {"reference": {"far_threshold": -0.1}},
    ):
        assert recorded_far_threshold(config) is None
