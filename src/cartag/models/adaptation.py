"""Advertiser-aware answers: the global model's answers adapted to one advertiser's fixes.

An advertiser whose photos the global model gets wrong *systematically* (a studio on
white it calls Stock, orange cars it calls Red) fixes a few of them; this module learns
from those fixes, and only those, how to change the same advertiser's other answers.
Three rules, fitted per field (type, color) from the fixed images alone:

- **nearest fix** ("fix one, fix the similar ones"): an image the model answered ``a``
  takes the fixed label of the most similar fixed image the model had also answered
  ``a``, when their embeddings' cosine similarity is at least
  :data:`DEFAULT_SIMILARITY` (calibrated on vcr-train, see ``benchmarks/advertiser_adaptation.py``)
  and that fix changed the answer (a fix that kept ``a`` keeps it);
- **repeated mistake** (a per-advertiser bias on the head's scores, shrunk toward the
  global model): when at least :data:`DEFAULT_MIN_REPEATS` fixes turned the model's ``g``
  into ``y``, an image answered ``g`` becomes ``y`` if ``log p(g) - log p(y)`` is below the
  largest such margin among those fixes times ``n / (n + shrinkage)`` (with a shrinkage:
  few fixes, a small bias), and below the margin of every fixed image the advertiser
  confirmed as ``g`` (a fix that kept the model's answer);
- **advertiser prior** (the issue's "per-advertiser prior ... with shrinkage toward the
  global model"): the labels its fixes gave, shrunk toward a uniform prior by
  :data:`DEFAULT_PRIOR_STRENGTH` pseudo-fixes, estimate the advertiser's own label prior;
  a label most of its fixes gave (at least :data:`DEFAULT_PRIOR_SHARE` of them, and at
  least :data:`DEFAULT_MIN_REPEATS`) raises the repeated-mistake bias of every mistake
  ``g -> y`` it has fixed at least once to ``log(prior[y] / prior[g])``. The fixes are the
  model's closest calls (the fix page lists the least sure first), so the largest fixed
  margin alone reached only the closest of the other mistakes.

All only ever move an answer to a label this advertiser's fixes gave; with no fixes
nothing changes. Pure numpy and deterministic: an advertiser with 200 fixes and 5,000
images costs one (5000, 200) similarity product per field (milliseconds).
Which rules serve was chosen by the simulation in ``benchmarks/advertiser_adaptation.py``
(RESULTS.md, "Advertiser-aware answers"; the prior was added after the first round).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

# Cosine similarity of standardised embeddings at or above which a fixed image's label
# carries over to an image the model answered alike. Calibrated on vcr-train (no
# simulated advertiser's photos; `benchmarks/advertiser_adaptation.py --calibrate`): the
# lowest similarity (in steps of 0.05) at which nearest neighbours answered alike share
# their true labels (type and color) at least 97 % of the time.
DEFAULT_SIMILARITY = 0.85
# A mistake (the model's g fixed to y) counts as systematic from this many fixes on.
DEFAULT_MIN_REPEATS = 2
# Pseudo-count of the shrinkage toward the global model (no bias). 0: none beyond the
# largest margin among the fixes, which is itself small: the fix page lists the least
# confident answers first, so the first fixes are the closest calls. The simulation
# measured 2/0 against 3/2, 2/2, 2/1 and 3/0 (RESULTS.md, "Advertiser-aware answers").
DEFAULT_SHRINKAGE = 0.0
# The advertiser prior: pseudo-count of the uniform prior its fixed labels are shrunk
# toward, and the share of its fixes one label needs before it shifts answers toward it.
DEFAULT_PRIOR_STRENGTH = 4.0
DEFAULT_PRIOR_SHARE = 0.5
NO_CHANGE = -1
_FLOOR = 1e-6  # probabilities are clipped here before logs


@dataclass(frozen=True)
class AdaptationParams:
    """How an adapter is fitted.

    Attributes:
        nearest: Use the nearest-fix rule.
        repeated: Use the repeated-mistake rule.
        similarity: The nearest-fix rule's cosine similarity threshold.
        min_repeats: Fixes of one (answer, label) pair that make it systematic.
        shrinkage: Pseudo-count of the repeated-mistake rule's shrinkage.
    """

    nearest: bool = True
    repeated: bool = True
    similarity: float = DEFAULT_SIMILARITY
    min_repeats: int = DEFAULT_MIN_REPEATS
    shrinkage: float = DEFAULT_SHRINKAGE
    prior: bool = True
    prior_strength: float = DEFAULT_PRIOR_STRENGTH
    prior_share: float = DEFAULT_PRIOR_SHARE
    prior_seen_only: bool = True


@dataclass(frozen=True)
class FieldFixes:
    """One field's fixes of an advertiser's fixed images.

    Attributes:
        answered: int (n,) the global model's answer per fixed image (label index;
            -1: it had none, e.g. no color for a Placeholder).
        fixed: int (n,) the fixed label (-1: this field was not fixed on that image).
        scores: float (n, K) the global model's probabilities for the fixed images.
    """

    answered: np.ndarray
    fixed: np.ndarray
    scores: np.ndarray


@dataclass(frozen=True)
class FieldAdapter:
    """A fitted adapter of one field (see the module docstring for the rules).

    Attributes:
        vectors: float32 (n, D) unit vectors of the fixed images that changed or kept
            an answer (the nearest-fix rule's reference set).
        answered: int (n,) the model's answer of each of those images.
        fixed: int (n,) their fixed labels.
        bias: float (K, K) ``bias[g, y]``: an image answered ``g`` becomes ``y`` when
            ``log p(g) - log p(y) < bias[g, y]``; 0 where the rule does not apply.
        similarity: The nearest-fix threshold.
    """

    vectors: np.ndarray
    answered: np.ndarray
    fixed: np.ndarray
    bias: np.ndarray
    similarity: float

    @property
    def empty(self) -> bool:
        return len(self.fixed) == 0 and not np.any(self.bias > 0)

    def apply(self, units: np.ndarray, answered: np.ndarray, scores: np.ndarray) -> np.ndarray:
        """The adapted label of each image, or :data:`NO_CHANGE`.

        Args:
            units: float32 (m, D) unit vectors (:func:`unit_vectors`).
            answered: int (m,) the model's answers (-1: none; never changed).
            scores: float (m, K) the model's probabilities.

        Returns:
            int (m,) the new label index, or -1 where the answer stays.
        """
        out = np.full(len(answered), NO_CHANGE, dtype=np.int64)
        if len(answered) == 0:
            return out
        answered = np.asarray(answered, dtype=np.int64)
        if np.any(self.bias > 0):
            logp = np.log(np.clip(np.asarray(scores, dtype=np.float64), _FLOOR, None))
            rows = np.flatnonzero(answered >= 0)
            own = logp[rows, answered[rows]][:, None]
            slack = self.bias[answered[rows]] - (own - logp[rows])  # (r, K): > 0 flips
            slack[np.arange(len(rows)), answered[rows]] = -np.inf
            best = slack.argmax(axis=1)
            flip = slack[np.arange(len(rows)), best] > 0
            out[rows[flip]] = best[flip]
        if len(self.fixed):
            sims = units @ self.vectors.T  # (m, n)
            sims[answered[:, None] != self.answered[None, :]] = -np.inf
            nearest = sims.argmax(axis=1)
            close = sims[np.arange(len(answered)), nearest] >= self.similarity
            label = self.fixed[nearest]
            moved = close & (answered >= 0) & (label != answered)
            out[moved] = label[moved]
            # A near-identical image whose fix kept the model's answer keeps it too.
            out[close & (label == answered)] = NO_CHANGE
        return out


@dataclass(frozen=True)
class Adapter:
    """An advertiser's adapters, by field name (``image_type``, ``color``)."""

    fields: Mapping[str, FieldAdapter] = field(default_factory=dict)
    center: np.ndarray | None = None
    scale: np.ndarray | None = None

    @property
    def empty(self) -> bool:
        return all(adapter.empty for adapter in self.fields.values())

    @property
    def needs_scores(self) -> bool:
        """Whether :meth:`apply` reads the scores (a repeated-mistake rule applies)."""
        return any(np.any(adapter.bias > 0) for adapter in self.fields.values())

    def apply(
        self,
        embeddings: np.ndarray,
        answered: Mapping[str, np.ndarray],
        scores: Mapping[str, np.ndarray],
    ) -> dict[str, np.ndarray]:
        """Adapted labels of ``m`` images, per field.

        Args:
            embeddings: float (m, D) backbone embeddings.
            answered: Field -> int (m,) the model's answers (-1: none).
            scores: Field -> float (m, K) the model's probabilities.

        Returns:
            Field -> int (m,) new label index, or -1 (:data:`NO_CHANGE`).
        """
        units = unit_vectors(embeddings, self.center, self.scale)
        return {
            name: adapter.apply(units, answered[name], scores[name])
            for name, adapter in self.fields.items()
            if name in answered
        }


def unit_vectors(
    embeddings: np.ndarray, center: np.ndarray | None = None, scale: np.ndarray | None = None
) -> np.ndarray:
    """Standardised, L2-normalised embeddings (their dot products are cosine similarities).

    Args:
        embeddings: float (m, D).
        center: float (D,) subtracted first (the type head's feature mean), or None.
        scale: float (D,) divided by next (its feature std), or None.

    Returns:
        float32 (m, D), rows of unit length (zero rows stay zero).
    """
    x: np.ndarray = np.asarray(embeddings, dtype=np.float32)
    if center is not None:
        x = x - np.asarray(center, dtype=np.float32)
    if scale is not None:
        x = x / np.asarray(scale, dtype=np.float32)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.maximum(norms, np.float32(1e-12))  # type: ignore[no-any-return]


def _bias(fixes: FieldFixes, n_labels: int, params: AdaptationParams) -> np.ndarray:
    bias = np.zeros((n_labels, n_labels), dtype=np.float64)
    logp = np.log(np.clip(np.asarray(fixes.scores, dtype=np.float64), _FLOOR, None))
    answered, fixed = fixes.answered, fixes.fixed
    for g in range(n_labels):
        confirmed = np.flatnonzero((answered == g) & (fixed == g))
        for y in range(n_labels):
            rows = np.flatnonzero((answered == g) & (fixed == y))
            if y == g or len(rows) < params.min_repeats:
                continue
            margins = logp[rows, g] - logp[rows, y]
            value = float(margins.max()) * len(rows) / (len(rows) + params.shrinkage)
            if len(confirmed):
                # Never flip an answer at least as clear as one this advertiser kept.
                value = min(value, float((logp[confirmed, g] - logp[confirmed, y]).min()))
            bias[g, y] = max(value, 0.0)
    if params.prior:
        _prior_shift(bias, logp, answered, fixed, params)
    return bias


def _prior_shift(
    bias: np.ndarray,
    logp: np.ndarray,
    answered: np.ndarray,
    fixed: np.ndarray,
    params: AdaptationParams,
) -> None:
    """The advertiser prior: raise ``bias[g, y]`` toward a label most of its fixes gave.

    The labels its fixes gave, shrunk toward a uniform prior by ``prior_strength``
    pseudo-fixes, estimate the advertiser's prior; a label ``y`` given by at least
    ``min_repeats`` fixes and ``prior_share`` of them shifts every other answer ``g``
    toward it by ``log(prior[y] / prior[g])``, capped, as the repeated-mistake rule is,
    by the clearest answer ``g`` the advertiser kept.
    """
    n_labels = bias.shape[0]
    changed = fixed != answered
    counts = np.bincount(fixed[changed], minlength=n_labels).astype(np.float64)
    total = float(counts.sum())
    if total == 0:
        return
    alpha = params.prior_strength
    log_prior = np.log((counts + alpha / n_labels) / (total + alpha) * n_labels)  # (K,)
    for y in np.flatnonzero(
        (counts >= params.min_repeats) & (counts >= params.prior_share * total)
    ):
        for g in range(n_labels):
            if g == y:
                continue
            if params.prior_seen_only and not np.any(changed & (answered == g) & (fixed == y)):
                continue  # only a mistake this advertiser has fixed at least once
            value = float(log_prior[y] - log_prior[g])
            confirmed = np.flatnonzero((answered == g) & (fixed == g))
            if len(confirmed):
                value = min(value, float((logp[confirmed, g] - logp[confirmed, y]).min()))
            bias[g, y] = max(bias[g, y], value, 0.0)


def fit_field(
    units: np.ndarray, fixes: FieldFixes, n_labels: int, params: AdaptationParams
) -> FieldAdapter:
    """Fit one field's adapter from the fixed images.

    Args:
        units: float32 (n, D) unit vectors of the fixed images (:func:`unit_vectors`).
        fixes: The field's model answers, fixed labels and scores of those images.
        n_labels: K, the field's vocabulary size.
        params: Which rules, and their constants.
    """
    answered = np.asarray(fixes.answered, dtype=np.int64)
    fixed = np.asarray(fixes.fixed, dtype=np.int64)
    used = (fixed >= 0) & (answered >= 0)
    keep = used if params.nearest else np.zeros_like(used)
    bias = np.zeros((n_labels, n_labels))
    if params.repeated and np.any(used):
        scores = np.asarray(fixes.scores)[used]
        bias = _bias(FieldFixes(answered[used], fixed[used], scores), n_labels, params)
    return FieldAdapter(
        vectors=np.ascontiguousarray(units[keep], dtype=np.float32),
        answered=answered[keep],
        fixed=fixed[keep],
        bias=bias,
        similarity=params.similarity,
    )


def fit_adapter(
    embeddings: np.ndarray,
    fields: Mapping[str, FieldFixes],
    vocabularies: Mapping[str, Sequence[str]],
    params: AdaptationParams | None = None,
    *,
    center: np.ndarray | None = None,
    scale: np.ndarray | None = None,
) -> Adapter:
    """Fit an advertiser's adapter from its fixed images.

    Args:
        embeddings: float (n, D) backbone embeddings of the fixed images.
        fields: Field name -> that field's answers, fixed labels and scores (n rows).
        vocabularies: Field name -> its labels (K per field, score order).
        params: Rules and constants (default: both rules, calibrated constants).
        center: float (D,) feature mean to standardise with (the type head's), or None.
        scale: float (D,) feature std to standardise with, or None.

    Returns:
        The adapter; applying it to images with no similar fix and no repeated
        mistake changes nothing.
    """
    params = params or AdaptationParams()
    units = unit_vectors(embeddings, center, scale) if len(embeddings) else np.zeros((0, 0))
    fitted = {
        name: fit_field(units, fixes, len(vocabularies[name]), params)
        for name, fixes in fields.items()
    }
    return Adapter(fitted, center, scale)
