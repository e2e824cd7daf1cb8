"""Temperature scaling: fitting, ECE, and the temperature stored in and applied by LinearHead."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from cartag.errors import ModelError
from cartag.models.heads import LinearHead, softmax
from cartag.training.fitting import calibration


def _head(**metadata: object) -> LinearHead:
    rng = np.random.default_rng(0)
    return LinearHead(
        ["a", "b", "c"],
        rng.normal(size=(4, 3)),
        np.zeros(3),
        np.zeros(4),
        np.ones(4),
        metadata=metadata,
    )


def test_fit_temperature_undoes_overconfidence() -> None:
    rng = np.random.default_rng(0)
    true_logits = rng.normal(0, 2, (4000, 3))
    y = np.array([rng.choice(3, p=p) for p in softmax(true_logits)])
    overconfident = true_logits * 3.0
    temperature = calibration.fit_temperature(overconfident, y)
    assert temperature == pytest.approx(3.0, rel=0.1)
    before = calibration.expected_calibration_error(softmax(overconfident), y)
    after = calibration.expected_calibration_error(
        calibration.calibrated_proba(overconfident, temperature), y
    )
    assert after < before / 3
    assert calibration.nll(overconfident, y, temperature) < calibration.nll(overconfident, y, 1.0)


def test_ece_of_known_cases() -> None:
    y = np.array([0, 1, 0, 1])
    certain = np.array([[1.0, 0.0]] * 4)  # always sure, right half the time
    assert calibration.expected_calibration_error(certain, y) == pytest.approx(0.5)
    honest = np.array([[0.5, 0.5]] * 4)  # argmax 0: right half the time at confidence 0.5
    assert calibration.expected_calibration_error(honest, y) == pytest.approx(0.0)


def test_confidence_table_counts_flagged_errors() -> None:
    proba = np.array([[0.9, 0.1], [0.55, 0.45], [0.6, 0.4], [0.2, 0.8]])
    y = np.array([0, 1, 0, 1])
    (row,) = calibration.confidence_table(proba, y, [0.7])
    assert row["share_low"] == 0.5 and row["accuracy_confident"] == 1.0
    assert row["accuracy_low"] == 0.5 and (row["errors_flagged"], row["errors_total"]) == (1, 1)


def test_head_applies_its_temperature(tmp_path: Path) -> None:
    emb = np.random.default_rng(1).normal(size=(5, 4)).astype(np.float32)
    plain, hot = _head(), _head(temperature=2.5)
    assert plain.temperature == 1.0 and hot.temperature == 2.5
    logits = plain.logits(emb).astype(np.float64)
    np.testing.assert_allclose(plain.predict_proba(emb), softmax(logits), atol=1e-6)
    np.testing.assert_allclose(hot.predict_proba(emb), softmax(logits / 2.5), atol=1e-6)
    # Scaling never changes the argmax, only the confidence.
    assert (hot.predict_proba(emb).argmax(1) == plain.predict_proba(emb).argmax(1)).all()

    hot.save(tmp_path / "head")
    loaded = LinearHead.load(tmp_path / "head")
    assert loaded.temperature == 2.5
    np.testing.assert_array_equal(loaded.predict_proba(emb), hot.predict_proba(emb))
    assert loaded.digest() == hot.digest() != plain.digest()


def test_heads_without_a_temperature_are_unchanged(tmp_path: Path) -> None:
    head = _head(task="image_type")
    head.save(tmp_path / "old")
    meta = json.loads((tmp_path / "old.json").read_text())
    assert "temperature" not in meta  # what heads written before calibration look like
    loaded = LinearHead.load(tmp_path / "old")
    assert loaded.temperature == 1.0
    assert loaded.digest() == _head(temperature=1.0).digest()


@pytest.mark.parametrize("bad", [0, -1.0, "2", float("nan"), True])
def test_bad_temperatures_are_rejected(tmp_path: Path, bad: object) -> None:
    with pytest.raises(ValueError, match="temperature"):
        _head(temperature=bad)
    _head().save(tmp_path / "h")
    meta = json.loads((tmp_path / "h.json").read_text())
    meta["temperature"] = bad
    (tmp_path / "h.json").write_text(json.dumps(meta))
    with pytest.raises(ModelError, match="temperature"):
        LinearHead.load(tmp_path / "h")
