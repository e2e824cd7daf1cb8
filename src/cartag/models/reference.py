"""The training reference of a model: where its training images sit in embedding space.

Drift is measured against it. A reference is ``K`` k-means centroids of the model's
training-split embeddings (spherical k-means: L2-normalised, cosine), kept beside the
weights as ``reference.npz`` with a ``"reference"`` section in ``config.json``. An
image's **novelty** is the cosine distance from its embedding to the nearest
centroid (0: on a centroid, 1: orthogonal to all of them). The distribution of
novelty on the held-out split (images the centroids never saw, from the same sources)
gives the quantiles; ``far_threshold`` is their p95, so by construction about 5% of
in-distribution images are "far", and a batch from another source shows as a much
larger far share.

Pure numpy: built by the training code (:mod:`cartag.training.bundled.reference`),
loaded by the classifier (:func:`load_reference`), read by drift and dataset
candidates through :meth:`DriftReference.novelty`.
"""

from __future__ import annotations

import hashlib
import io
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import numpy as np

log = logging.getLogger(__name__)

REFERENCE_NAME: Final[str] = "reference.npz"
REFERENCE_FORMAT: Final[str] = "cartag-reference/1"
DEFAULT_K: Final[int] = 256
QUANTILES: Final[tuple[int, ...]] = (50, 90, 95, 99)
FAR_QUANTILE: Final[str] = "p95"
_KMEANS_ITERATIONS: Final[int] = 30


def _normalise(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    out: np.ndarray = x / np.maximum(norms, 1e-12)
    return out


@dataclass(frozen=True)
class DriftReference:
    """A model's training reference.

    Attributes:
        centroids: float16 (K, D), L2-normalised.
        quantiles: Held-out novelty quantiles, ``{"p50": ..., "p90": ..., ...}``.
        far_threshold: Novelty above which an image counts as far (held-out p95).
        embedding_id: The backbone id whose embeddings the centroids are of.
    """

    centroids: np.ndarray
    quantiles: dict[str, float]
    far_threshold: float
    embedding_id: str
    # float32 (D, K), made once: every model batch multiplies by it.
    _matrix: np.ndarray = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(
            self, "_matrix", np.ascontiguousarray(self.centroids.astype(np.float32).T)
        )

    def novelty(self, embeddings: np.ndarray) -> np.ndarray:
        """Cosine distance of each embedding to its nearest centroid.

        Args:
            embeddings: (N, D) backbone embeddings (any norm).

        Returns:
            float32 (N,), in [0, 2] (in practice [0, 1]: embeddings after a ReLU
            network are non-negative).
        """
        emb = _normalise(np.atleast_2d(embeddings))
        if emb.shape[1] != self.centroids.shape[1]:
            raise ValueError(
                f"embeddings are {emb.shape[1]}-d, the reference's centroids "
                f"{self.centroids.shape[1]}-d"
            )
        similarity: np.ndarray = emb @ self._matrix  # (N, K)
        novelty: np.ndarray = (1.0 - similarity.max(axis=1)).astype(np.float32)
        return novelty

    def far(self, embeddings: np.ndarray) -> np.ndarray:
        """bool (N,): which embeddings lie beyond ``far_threshold``."""
        far: np.ndarray = self.novelty(embeddings) > self.far_threshold
        return far

    def serves(self, backbone_id: str | None) -> bool:
        """Whether embeddings of ``backbone_id`` may be measured against this reference:
        the same backbone, or its int8 quantization (``<id>+int8@<ranges>``), whose
        embeddings stay within rounding of the float ones."""
        if backbone_id is None:
            return False
        return backbone_id == self.embedding_id or backbone_id.startswith(
            self.embedding_id + "+int8@"
        )


def fit_centroids(embeddings: np.ndarray, k: int = DEFAULT_K, *, seed: int = 0) -> np.ndarray:
    """Spherical k-means (cosine) of embeddings, seeded k-means++ start.

    Args:
        embeddings: (N, D) training embeddings, N >= 1.
        k: Centroids wanted (fewer when N < k).
        seed: Seeds the start.

    Returns:
        float32 (min(k, N), D), L2-normalised.
    """
    x = _normalise(embeddings)
    n = x.shape[0]
    k = min(k, n)
    rng = np.random.default_rng(seed)
    # k-means++ on cosine distance: spread starts so no centroid begins in a crowd.
    chosen = [int(rng.integers(n))]
    dist = 1.0 - x @ x[chosen[0]]
    for _ in range(1, k):
        weights = np.clip(dist, 0.0, None) ** 2
        total = float(weights.sum())
        nxt = int(rng.integers(n)) if total <= 0 else int(rng.choice(n, p=weights / total))
        chosen.append(nxt)
        dist = np.minimum(dist, 1.0 - x @ x[nxt])
    centroids = x[chosen].copy()
    for _ in range(_KMEANS_ITERATIONS):
        assign = (x @ centroids.T).argmax(axis=1)
        moved = np.zeros_like(centroids)
        np.add.at(moved, assign, x)
        empty = np.linalg.norm(moved, axis=1) == 0
        moved[empty] = centroids[empty]  # an empty cluster keeps its centroid
        moved = _normalise(moved)
        if np.allclose(moved, centroids, atol=1e-6):
            centroids = moved
            break
        centroids = moved
    return centroids


def build_reference(
    train: np.ndarray,
    held_out: np.ndarray,
    *,
    embedding_id: str,
    k: int = DEFAULT_K,
    seed: int = 0,
) -> DriftReference:
    """Centroids of the training split, quantiles of the held-out split's novelty.

    Args:
        train: (N, D) training-split embeddings.
        held_out: (M, D) held-out embeddings of the same sources, M >= 1.
        embedding_id: The backbone id that made them.
        k: Centroids.
        seed: Seeds k-means.

    Raises:
        ValueError: An empty split, or splits of different widths.
    """
    if len(train) == 0 or len(held_out) == 0:
        raise ValueError("a reference needs training and held-out embeddings")
    if train.shape[1] != held_out.shape[1]:
        raise ValueError("training and held-out embeddings have different widths")
    centroids = fit_centroids(train, k, seed=seed).astype(np.float16)
    probe = DriftReference(centroids, {}, 0.0, embedding_id)
    held = probe.novelty(held_out)
    quantiles = {f"p{q}": round(float(np.percentile(held, q)), 6) for q in QUANTILES}
    return DriftReference(centroids, quantiles, quantiles[FAR_QUANTILE], embedding_id)


def save_reference(
    reference: DriftReference, folder: Path, *, built_from: dict[str, Any], seed: int = 0
) -> dict[str, Any]:
    """Write ``reference.npz`` into a model folder; returns its ``config.json`` section.

    Args:
        reference: What to write.
        folder: The model folder.
        built_from: What it was built from (sources, split, counts), recorded as said.
        seed: The k-means seed, recorded.
    """
    buffer = io.BytesIO()
    np.savez_compressed(buffer, centroids=reference.centroids.astype(np.float16))
    data = buffer.getvalue()
    (folder / REFERENCE_NAME).write_bytes(data)
    return {
        "format": REFERENCE_FORMAT,
        "file": REFERENCE_NAME,
        "k": int(reference.centroids.shape[0]),
        "dim": int(reference.centroids.shape[1]),
        "embedding_id": reference.embedding_id,
        "metric": "cosine distance to the nearest k-means centroid of the training split",
        "quantiles": dict(reference.quantiles),
        "far_threshold": reference.far_threshold,
        "far_rule": f"held-out {FAR_QUANTILE}: ~5% of in-distribution images are far",
        "seed": seed,
        "built_from": built_from,
        "sha256": hashlib.sha256(data).hexdigest(),
    }


def recorded_far_threshold(config: dict[str, Any]) -> float | None:
    """The far threshold a model folder's ``config.json`` records, without loading the
    centroids (None: no reference section, or no finite, non-negative threshold in it)."""
    block = config.get("reference")
    value = block.get("far_threshold") if isinstance(block, dict) else None
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    if not math.isfinite(value) or value < 0:
        return None
    return float(value)


def load_reference(folder: Path, config: dict[str, Any]) -> DriftReference | None:
    """The reference a model folder ships, or None (none, or unusable: logged).

    A model without a usable reference still serves; drift then shows the answer mix
    and confidence only, so a broken reference is a warning, not a refusal.
    """
    block = config.get("reference")
    if block is None:
        return None
    try:
        name = str(block["file"])
        if Path(name).name != name:
            raise ValueError(f"file {name!r} is not a plain name in the folder")
        data = (folder / name).read_bytes()
        if hashlib.sha256(data).hexdigest() != block["sha256"]:
            raise ValueError(f"{name} does not match its sha256")
        with np.load(io.BytesIO(data), allow_pickle=False) as npz:
            centroids = np.asarray(npz["centroids"], dtype=np.float16)
        if centroids.ndim != 2 or centroids.shape[0] == 0:
            raise ValueError(f"centroids of shape {centroids.shape}")
        return DriftReference(
            centroids,
            {str(k): float(v) for k, v in dict(block["quantiles"]).items()},
            float(block["far_threshold"]),
            str(block["embedding_id"]),
        )
    except (OSError, KeyError, TypeError, ValueError) as exc:
        log.warning(
            "the drift reference of %s cannot be used (%s); serving without novelty. "
            "Rebuild it with `cartag models add-reference %s`",
            folder,
            exc,
            folder,
        )
        return None
