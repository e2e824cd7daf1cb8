"""The adapter of advertiser-aware answers: fitting from fixes and applying it."""

from __future__ import annotations

import time

import numpy as np
import pytest

from cartag.models.adaptation import (
    NO_CHANGE,
    AdaptationParams,
    FieldFixes,
    fit_adapter,
    unit_vectors,
)

LABELS = {"image_type": ("Dealer", "Stock", "Placeholder")}
DEALER, STOCK, PLACEHOLDER = 0, 1, 2


def probs(rows: list[list[float]]) -> np.ndarray:
    return np.asarray(rows, dtype=np.float64)


def clusters(rng: np.random.Generator, centers: np.ndarray, per: int, noise: float) -> np.ndarray:
    """``per`` points around each center: float32 (len(centers) * per, D)."""
    return np.concatenate([c + noise * rng.standard_normal((per, len(c))) for c in centers]).astype(
        np.float32
    )


def test_unit_vectors_standardise_then_normalise() -> None:
    emb = np.asarray([[3.0, 4.0], [0.0, 0.0], [2.0, 6.0]])
    units = unit_vectors(emb, center=np.asarray([1.0, 2.0]), scale=np.asarray([2.0, 4.0]))
    np.testing.assert_allclose(units[0], [0.8944272, 0.4472136], rtol=1e-6)
    np.testing.assert_allclose(np.linalg.norm(units, axis=1), [1.0, 1.0, 1.0], rtol=1e-6)
    assert units.dtype == np.float32


def test_a_near_copy_of_a_fixed_image_takes_its_label_and_a_far_one_does_not() -> None:
    rng = np.random.default_rng(0)
    fixed = rng.standard_normal((1, 16)).astype(np.float32)
    adapter = fit_adapter(
        fixed,
        {
            "image_type": FieldFixes(
                np.asarray([DEALER]), np.asarray([STOCK]), probs([[0.9, 0.08, 0.02]])
            )
        },
        LABELS,
        AdaptationParams(repeated=False, similarity=0.9),
    )
    near = fixed + 0.05 * rng.standard_normal((1, 16)).astype(np.float32)
    far = rng.standard_normal((1, 16)).astype(np.float32)
    answered_other = fixed.copy()  # the same photo, but the model answered it Stock already
    out = adapter.apply(
        np.concatenate([near, far, answered_other]),
        {"image_type": np.asarray([DEALER, DEALER, STOCK])},
        {"image_type": probs([[0.9, 0.08, 0.02], [0.9, 0.08, 0.02], [0.1, 0.88, 0.02]])},
    )
    assert out["image_type"].tolist() == [STOCK, NO_CHANGE, NO_CHANGE]


def test_a_fix_that_kept_the_answer_keeps_it_for_its_near_copies() -> None:
    rng = np.random.default_rng(1)
    base = rng.standard_normal((2, 16)).astype(np.float32)
    # Image 0's fix confirmed Dealer; image 1 (far away) was fixed to Stock three times over.
    emb = np.concatenate([base[:1], base[1:] + 0.01 * rng.standard_normal((3, 16))]).astype(
        np.float32
    )
    adapter = fit_adapter(
        emb,
        {
            "image_type": FieldFixes(
                np.asarray([DEALER] * 4),
                np.asarray([DEALER, STOCK, STOCK, STOCK]),
                probs([[0.6, 0.39, 0.01]] + [[0.6, 0.39, 0.01]] * 3),
            )
        },
        LABELS,
        AdaptationParams(similarity=0.95),
    )
    out = adapter.apply(
        base[:1] + 0.001,
        {"image_type": np.asarray([DEALER])},
        {"image_type": probs([[0.55, 0.44, 0.01]])},
    )
    assert out["image_type"].tolist() == [NO_CHANGE]


def test_a_repeated_mistake_biases_close_calls_only_and_shrinks_with_few_fixes() -> None:
    rng = np.random.default_rng(2)
    emb = rng.standard_normal((3, 16)).astype(np.float32)
    # Three Dealer answers fixed to Stock; their log-margins are log(0.7/0.3) at most.
    fixes = FieldFixes(
        np.asarray([DEALER] * 3),
        np.asarray([STOCK] * 3),
        probs([[0.7, 0.29, 0.01], [0.6, 0.39, 0.01], [0.55, 0.44, 0.01]]),
    )
    params = AdaptationParams(nearest=False, min_repeats=3, shrinkage=2.0, prior=False)
    adapter = fit_adapter(emb, {"image_type": fixes}, LABELS, params)
    bias = adapter.fields["image_type"].bias
    largest = np.log(0.7) - np.log(0.29)
    assert bias[DEALER, STOCK] == pytest.approx(largest * 3 / 5)
    assert np.count_nonzero(bias) == 1
    others = rng.standard_normal((4, 16)).astype(np.float32)
    out = adapter.apply(
        others,
        {"image_type": np.asarray([DEALER, DEALER, STOCK, PLACEHOLDER])},
        {
            "image_type": probs(
                [[0.55, 0.44, 0.01], [0.97, 0.02, 0.01], [0.44, 0.55, 0.01], [0.3, 0.3, 0.4]]
            )
        },
    )
    # A close Dealer call flips; a clear one, a Stock answer and another mistake do not.
    assert out["image_type"].tolist() == [STOCK, NO_CHANGE, NO_CHANGE, NO_CHANGE]


def test_the_advertiser_prior_reaches_past_the_fixed_margins_of_mistakes_it_fixed() -> None:
    emb = np.eye(3, 16, dtype=np.float32)
    # Three close Dealer calls fixed to Stock: the largest fixed margin is log(0.7/0.3).
    fixes = FieldFixes(
        np.asarray([DEALER] * 3),
        np.asarray([STOCK] * 3),
        probs([[0.7, 0.3, 0.0], [0.6, 0.4, 0.0], [0.55, 0.45, 0.0]]),
    )
    answered = {"image_type": np.asarray([DEALER, DEALER, PLACEHOLDER])}
    scores = {"image_type": probs([[0.75, 0.25, 0.0], [0.95, 0.05, 0.0], [0.0, 0.3, 0.7]])}
    without = fit_adapter(emb, {"image_type": fixes}, LABELS, AdaptationParams(prior=False))
    with_prior = fit_adapter(emb, {"image_type": fixes}, LABELS, AdaptationParams())
    others = np.eye(3, 16, k=5, dtype=np.float32)
    assert without.apply(others, answered, scores)["image_type"].tolist() == [NO_CHANGE] * 3
    # Stock is the advertiser's label: prior (3 + 4/3) / 7 * 3 against (0 + 4/3) / 7 * 3 for
    # Dealer, a log-ratio of 1.18 > log(0.75/0.25). A clear Dealer call stays, and so does
    # a mistake it never fixed (Placeholder -> Stock).
    bias = with_prior.fields["image_type"].bias
    assert bias[DEALER, STOCK] == pytest.approx(np.log((3 + 4 / 3) / (4 / 3)))
    assert bias[PLACEHOLDER, STOCK] == 0
    flipped = with_prior.apply(others, answered, scores)["image_type"].tolist()
    assert flipped == [STOCK, NO_CHANGE, NO_CHANGE]


def test_one_fix_of_a_mistake_is_not_yet_systematic_two_are() -> None:
    emb = np.eye(2, 16, dtype=np.float32)
    fixes = FieldFixes(
        np.asarray([DEALER] * 2), np.asarray([STOCK] * 2), probs([[0.6, 0.39, 0.01]] * 2)
    )
    one = FieldFixes(fixes.answered[:1], fixes.fixed[:1], fixes.scores[:1])
    params = AdaptationParams(nearest=False)
    assert fit_adapter(emb[:1], {"image_type": one}, LABELS, params).empty
    assert not fit_adapter(emb, {"image_type": fixes}, LABELS, params).empty


def test_a_confirmed_answer_caps_the_bias() -> None:
    emb = np.eye(5, 16, dtype=np.float32)
    fixes = FieldFixes(
        np.asarray([DEALER] * 5),
        np.asarray([STOCK, STOCK, STOCK, STOCK, DEALER]),
        probs([[0.9, 0.09, 0.01]] * 4 + [[0.6, 0.39, 0.01]]),
    )
    adapter = fit_adapter(emb, {"image_type": fixes}, LABELS, AdaptationParams(nearest=False))
    assert adapter.fields["image_type"].bias[DEALER, STOCK] == pytest.approx(
        np.log(0.6) - np.log(0.39)
    )


def test_no_fixes_change_nothing_and_unfixed_fields_are_ignored() -> None:
    emb = np.ones((2, 4), dtype=np.float32)
    # Two fixed images whose type was not fixed (a color fix): no type rule at all.
    fixes = FieldFixes(np.asarray([DEALER, DEALER]), np.asarray([-1, -1]), probs([[1, 0, 0]] * 2))
    adapter = fit_adapter(emb, {"image_type": fixes}, LABELS)
    assert adapter.empty
    out = adapter.apply(
        emb, {"image_type": np.asarray([DEALER, -1])}, {"image_type": probs([[1, 0, 0]] * 2)}
    )
    assert out["image_type"].tolist() == [NO_CHANGE, NO_CHANGE]
    empty = fit_adapter(np.zeros((0, 4), np.float32), {}, LABELS)
    assert empty.empty and empty.apply(emb, {}, {}) == {}


def test_an_advertiser_who_errs_systematically_is_mostly_repaired_by_ten_fixes() -> None:
    """Synthetic: a studio whose photos (one cluster) the model calls Dealer, truly Stock;
    the same advertiser's real dealer photos (another cluster) must stay Dealer."""
    rng = np.random.default_rng(3)
    centers = rng.standard_normal((2, 32)) * 3
    studio = clusters(rng, centers[:1], 200, 1.0)
    lot = clusters(rng, centers[1:], 200, 1.0)
    studio_p = np.tile([0.65, 0.34, 0.01], (200, 1)) + rng.uniform(-0.1, 0.1, (200, 1)) * [1, -1, 0]
    lot_p = np.tile([0.9, 0.09, 0.01], (200, 1))
    fixed = np.arange(10)
    adapter = fit_adapter(
        studio[fixed],
        {"image_type": FieldFixes(np.zeros(10, np.int64), np.ones(10, np.int64), studio_p[fixed])},
        LABELS,
    )
    out_studio = adapter.apply(
        studio[10:], {"image_type": np.zeros(190, np.int64)}, {"image_type": studio_p[10:]}
    )
    out_lot = adapter.apply(lot, {"image_type": np.zeros(200, np.int64)}, {"image_type": lot_p})
    assert (out_studio["image_type"] == STOCK).mean() >= 0.5
    assert (out_lot["image_type"] == NO_CHANGE).all()


def test_two_hundred_fixes_and_five_thousand_images_take_milliseconds() -> None:
    rng = np.random.default_rng(4)
    d, k = 1280, 12
    emb = rng.standard_normal((200, d)).astype(np.float32)
    scores = rng.dirichlet(np.ones(k), 200)
    colors = {"color": tuple(str(i) for i in range(k))}
    fixes = FieldFixes(scores.argmax(axis=1), rng.integers(0, k, 200), scores)
    started = time.perf_counter()
    adapter = fit_adapter(emb, {"color": fixes}, colors)
    others = rng.standard_normal((5000, d)).astype(np.float32)
    other_scores = rng.dirichlet(np.ones(k), 5000)
    adapter.apply(others, {"color": other_scores.argmax(axis=1)}, {"color": other_scores})
    assert time.perf_counter() - started < 1.0  # ~50 ms alone; generous for a busy machine
