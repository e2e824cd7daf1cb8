"""LinearHead inference, persistence and fitting (no backbone needed)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from cartag.errors import ModelError
from cartag.models.heads import HEAD_FORMAT, MLP_HEAD_FORMAT, LinearHead, MLPHead, load_head
from cartag.training.fitting.fit import balanced_accuracy, class_weights, fit_linear_head
from cartag.training.heads.color import MLPConfig, fit_color_head

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


def _random_mlp(d: int = 8, k: int = 3, start: int = 5, hidden: int = 4) -> MLPHead:
    rng = np.random.default_rng(3)
    linear = _random_head(d, k)
    return MLPHead(
        linear.labels,
        linear.weight,
        linear.bias,
        linear.feature_mean,
        linear.feature_std,
        rng.normal(size=(d - start, hidden)),
        rng.normal(size=hidden),
        rng.normal(size=(hidden, k)),
        mlp_start=start,
        metadata={"backbone_id": "test@00000000", "features": {"color_features": "x"}},
    )


def test_mlp_logits_are_linear_plus_mlp_on_trailing_columns() -> None:
    head = _random_mlp()
    emb = np.random.default_rng(1).normal(size=(6, 8)).astype(np.float32)
    z = (emb - head.feature_mean) / head.feature_std
    hidden = np.maximum(z[:, 5:] @ head.hidden_weight + head.hidden_bias, 0)
    expected = z @ head.weight + head.bias + hidden @ head.out_weight
    np.testing.assert_allclose(head.logits(emb), expected, rtol=1e-5, atol=1e-5)
    proba = head.predict_proba(emb)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, atol=1e-6)
    with pytest.raises(ValueError, match="embeddings"):
        head.predict_proba(np.zeros((2, 7), dtype=np.float32))


def test_mlp_inconsistent_shapes_are_rejected() -> None:
    head = _random_mlp()
    with pytest.raises(ValueError, match="inconsistent MLP"):
        MLPHead(
            head.labels,
            head.weight,
            head.bias,
            head.feature_mean,
            head.feature_std,
            head.hidden_weight,
            head.hidden_bias,
            head.out_weight,
            mlp_start=4,
        )


def test_mlp_save_load_roundtrip_and_load_head_dispatch(tmp_path: Path) -> None:
    head = _random_mlp()
    first = head.save(tmp_path / "color_head")[0].read_bytes()
    assert head.save(tmp_path / "again")[0].read_bytes() == first
    assert json.loads((tmp_path / "color_head.json").read_text())["format"] == MLP_HEAD_FORMAT
    loaded = load_head(tmp_path / "color_head")
    assert isinstance(loaded, MLPHead) and loaded.mlp_start == 5
    assert loaded.digest() == head.digest() and loaded.metadata == head.metadata
    emb = np.random.default_rng(2).normal(size=(3, 8)).astype(np.float32)
    np.testing.assert_array_equal(loaded.predict_proba(emb), head.predict_proba(emb))
    _random_head().save(tmp_path / "type_head")
    assert type(load_head(tmp_path / "type_head")) is LinearHead
    # A linear head is not an MLP head, and vice versa.
    with pytest.raises(ModelError, match="corrupt"):
        MLPHead.load(tmp_path / "type_head")
    with pytest.raises(ModelError, match="corrupt"):
        LinearHead.load(tmp_path / "color_head")


def test_load_head_rejects_unknown_format(tmp_path: Path) -> None:
    _random_head().save(tmp_path / "h")
    meta = json.loads((tmp_path / "h.json").read_text())
    meta["format"] = "cartag-forest/9"
    (tmp_path / "h.json").write_text(json.dumps(meta))
    with pytest.raises(ModelError, match="cartag-forest/9"):
        load_head(tmp_path / "h")
    (tmp_path / "h.json").unlink()
    with pytest.raises(ModelError, match="missing"):
        load_head(tmp_path / "h")


def test_fit_color_head_learns_from_trailing_features_and_keeps_absent_labels() -> None:
    # The trailing 4 columns hold the class signal in a non-linear (XOR-like) form
    # the linear part cannot use; the leading 6 columns are noise.
    rng = np.random.default_rng(0)
    n = 240
    y = rng.integers(0, 2, size=n)
    sign = rng.choice([-1.0, 1.0], size=n)
    signal = np.stack([sign, sign * np.where(y == 1, -1.0, 1.0)], axis=1)
    X = np.concatenate(
        [rng.normal(size=(n, 6)), signal * 2 + rng.normal(scale=0.3, size=(n, 2)),
         rng.normal(size=(n, 2))],
        axis=1,
    )  # fmt: skip
    y = np.where(y == 1, 2, 0)  # label "b" (index 1) never occurs
    config = MLPConfig(hidden=16, seeds=2, epoch_grid=(40,), lr=1e-2)
    (head,) = fit_color_head(X, y, LABELS[:3], mlp_start=6, l2=1e-2, epochs=(40,), config=config)
    (again,) = fit_color_head(X, y, LABELS[:3], mlp_start=6, l2=1e-2, epochs=(40,), config=config)
    assert head.digest() == again.digest()
    assert head.hidden_weight.shape == (4, 32)
    proba = head.predict_proba(X)
    assert balanced_accuracy(y, proba.argmax(axis=1)) > 0.9
    assert proba[:, 1].max() < 1e-3
    linear_only = fit_linear_head(X, y, LABELS[:3], l2=1e-2)
    assert balanced_accuracy(y, linear_only.predict_proba(X).argmax(axis=1)) < 0.75
