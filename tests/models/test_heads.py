"""LinearHead inference, persistence and fitting (no backbone needed)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from cartag.errors import ModelError
from cartag.models.heads import HEAD_FORMAT, LinearHead
from cartag.training.fit import balanced_accuracy, class_weights, fit_linear_head

LABELS = ("a", "b", "c", "d")


def _random_head(d: int = 8, k: int = 3, seed: int = 0) -> LinearHead:
    rng = np.random.default_rng(seed)
    return LinearHead(
        LABELS[:k],
        rng.normal(size=(d, k)),
        rng.normal(size=k),
        rng.normal(size=d),
        rng.uniform(0.5, 2.0, size=d),
        metadata={"backbone_id": "test@00000000", "metrics": {"accuracy": 0.5}},
    )


def _blobs(n_per: int, k: int, d: int = 16, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    centers = rng.normal(scale=3.0, size=(k, d))
    y = np.repeat(np.arange(k), n_per)
    return centers[y] + rng.normal(size=(len(y), d)), y


def test_predict_proba_is_a_distribution() -> None:
    head = _random_head()
    emb = np.random.default_rng(1).normal(size=(5, 8)).astype(np.float32)
    proba = head.predict_proba(emb)
    assert proba.shape == (5, 3) and proba.dtype == np.float32
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, atol=1e-6)
    expected = (emb - head.feature_mean) / head.feature_std @ head.weight + head.bias
    np.testing.assert_array_equal(proba.argmax(axis=1), expected.argmax(axis=1))


def test_predict_proba_rejects_wrong_width() -> None:
    with pytest.raises(ValueError, match="embeddings"):
        _random_head().predict_proba(np.zeros((2, 7), dtype=np.float32))


def test_inconsistent_shapes_are_rejected() -> None:
    with pytest.raises(ValueError, match="inconsistent"):
        LinearHead(("a", "b"), np.zeros((4, 3)), np.zeros(2), np.zeros(4), np.ones(4))


def test_save_load_roundtrip(tmp_path: Path) -> None:
    head = _random_head()
    npz, meta_path = head.save(tmp_path / "type_head")
    assert (npz.name, meta_path.name) == ("type_head.npz", "type_head.json")
    loaded = LinearHead.load(tmp_path / "type_head")
    assert loaded.labels == head.labels
    for name in ("weight", "bias", "feature_mean", "feature_std"):
        np.testing.assert_array_equal(getattr(loaded, name), getattr(head, name))
    assert loaded.metadata == head.metadata
    assert loaded.backbone_id == "test@00000000"
    assert loaded.digest() == head.digest()
    meta = json.loads(meta_path.read_text())
    assert meta["format"] == HEAD_FORMAT and meta["labels"] == list(LABELS[:3])


def test_save_is_byte_reproducible(tmp_path: Path) -> None:
    head = _random_head()
    first = head.save(tmp_path / "one")[0].read_bytes()
    second = head.save(tmp_path / "two")[0].read_bytes()
    assert first == second


@pytest.mark.parametrize("missing", [".npz", ".json"])
def test_missing_file_is_model_error(tmp_path: Path, missing: str) -> None:
    _random_head().save(tmp_path / "h")
    (tmp_path / f"h{missing}").unlink()
    with pytest.raises(ModelError, match="missing"):
        LinearHead.load(tmp_path / "h")


def test_corrupt_npz_is_model_error(tmp_path: Path) -> None:
    _random_head().save(tmp_path / "h")
    (tmp_path / "h.npz").write_bytes(b"not a zip file")
    with pytest.raises(ModelError, match="corrupt"):
        LinearHead.load(tmp_path / "h")


def test_label_mismatch_is_model_error(tmp_path: Path) -> None:
    _random_head().save(tmp_path / "h")
    meta = json.loads((tmp_path / "h.json").read_text())
    meta["labels"] = ["x", "y", "z"]
    (tmp_path / "h.json").write_text(json.dumps(meta))
    with pytest.raises(ModelError, match="labels"):
        LinearHead.load(tmp_path / "h")


def test_class_weights_balance_classes() -> None:
    y = np.array([0, 0, 0, 1])
    w = class_weights(y, 3)
    assert w[:3].sum() == pytest.approx(w[3])


def test_fit_separates_blobs_and_is_deterministic() -> None:
    X, y = _blobs(40, 3)
    head = fit_linear_head(X, y, LABELS[:3], l2=1e-2, epochs=100)
    again = fit_linear_head(X, y, LABELS[:3], l2=1e-2, epochs=100)
    X_test, y_test = _blobs(20, 3, seed=0)
    assert balanced_accuracy(y_test, head.predict_proba(X_test).argmax(axis=1)) > 0.95
    np.testing.assert_array_equal(head.weight, again.weight)
    assert head.metadata["train_counts"] == {"a": 40, "b": 40, "c": 40}


def test_absent_label_scores_near_zero() -> None:
    X, y = _blobs(30, 3)
    y = np.where(y == 2, 3, y)  # label "c" (index 2) never occurs
    head = fit_linear_head(X, y, LABELS, l2=1e-2, epochs=100)
    proba = head.predict_proba(X)
    assert proba.shape == (90, 4)
    assert proba[:, 2].max() < 1e-3
    assert head.metadata["absent_labels"] == ["c"]
