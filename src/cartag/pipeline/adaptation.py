"""Advertiser-aware answers in serving: whose answers adapt, from which fixes, cached how.

For an advertiser whose adaptation is on (its own ``adapt_answers`` setting, else
``CARTAG_ADVERTISER_ADAPTATION``) and that has at least one fix in its name (its
overrides, and the global fixes whose audit names it), an adapter
(:mod:`cartag.models.adaptation`) is fitted from those fixed images' embeddings and the
model's answers they corrected, and applied to the advertiser's other images: the
answers it changes carry ``source: "advertiser_model"``. An explicit fix still wins
(:func:`cartag.pipeline.fixes.resolve` applies fixes after it), adapted answers are
never stored nor audited, and turning the setting off gives the model's answers back.

Cost: an advertiser with adaptation off pays one primary-key read; one with it on but no
fixes one more indexed read; only an advertiser with fixes loads embeddings (of the
images being answered, one join per 500). Adapters are kept in memory per advertiser,
keyed by the serving model and the fixes' ids and times, so a new or changed fix or a
model swap refits the adapter at its next use.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Final

import numpy as np
from sqlalchemy.orm import Session

from cartag.models.adaptation import (
    NO_CHANGE,
    AdaptationParams,
    Adapter,
    FieldFixes,
    fit_adapter,
)
from cartag.models.classifier import Classifier
from cartag.store import advertisers as advertiser_repo
from cartag.store import embeddings as embedding_repo
from cartag.store import fixes as fix_repo
from cartag.store.embeddings import ScoredImage
from cartag.vocab import COLORS, IMAGE_TYPES, read_stored_color

FIELDS: Final[dict[str, tuple[str, ...]]] = {"image_type": IMAGE_TYPES, "color": COLORS}
# Adapters of this many advertisers are kept (least recently used dropped first). An
# adapter holds its fixed images' unit vectors (5 KiB each per field at D = 1280): 256
# advertisers with 200 fixes each come to about 500 MiB at worst.
MAX_CACHED: Final[int] = 256


@dataclass(frozen=True)
class Adapted:
    """An image's labels adapted to its advertiser's fixes (None: the model's stays)."""

    image_type: str | None = None
    color: str | None = None


# (session, advertiser id, image keys) -> the adapted answers of those images.
Adapt = Callable[[Session, str, Collection[str]], dict[str, Adapted]]


def enabled(own: bool | None, default: bool) -> bool:
    """Whether an advertiser's answers adapt: its own setting, else the deployment's."""
    return default if own is None else own


def _index(value: str | None, labels: Sequence[str]) -> int:
    return labels.index(value) if value in labels else -1


def _scores(stored: Mapping[str, float] | None, answered: int, labels: Sequence[str]) -> np.ndarray:
    """The stored probabilities in vocabulary order (K,); without them, all on the answer.

    An answer without scores (a vendor's color) is certain as far as the repeated-mistake
    rule can tell, so it never flips one.
    """
    if stored:
        return np.asarray([float(stored.get(label, 0.0)) for label in labels])
    out = np.zeros(len(labels))
    if answered >= 0:
        out[answered] = 1.0
    return out


def field_inputs(
    images: Sequence[ScoredImage],
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """The model's answers (int (m,)) and scores (float (m, K)) per field."""
    answered: dict[str, np.ndarray] = {}
    scores: dict[str, np.ndarray] = {}
    for name, labels in FIELDS.items():
        values = [
            _index(read_stored_color(i.color) if name == "color" else i.image_type, labels)
            for i in images
        ]
        stored = [i.color_scores if name == "color" else i.type_scores for i in images]
        answered[name] = np.asarray(values, dtype=np.int64)
        scores[name] = (
            np.stack([_scores(s, a, labels) for s, a in zip(stored, values, strict=True)])
            if images
            else np.zeros((0, len(labels)))
        )
    return answered, scores


def fit_from_fixes(
    fixes: Sequence[fix_repo.FixInName],
    images: Mapping[str, ScoredImage],
    params: AdaptationParams,
    center: np.ndarray | None,
    scale: np.ndarray | None,
) -> Adapter:
    """The adapter of an advertiser's fixed images (those with an embedding).

    An image with both an override and a global fix takes, per field, the override's
    label when it has one (the precedence rule).
    """
    labels: dict[str, dict[str, str | None]] = {}
    for fix in sorted(fixes, key=lambda f: f.scope != fix_repo.GLOBAL):  # globals first
        entry = labels.setdefault(fix.image_key, {"image_type": None, "color": None})
        if fix.image_type is not None:
            entry["image_type"] = fix.image_type
        if fix.color is not None:
            entry["color"] = fix.color
    keys = [key for key in labels if key in images]
    rows = [images[key] for key in keys]
    if not rows:
        return Adapter()
    answered, scores = field_inputs(rows)
    fields = {
        name: FieldFixes(
            answered=answered[name],
            fixed=np.asarray([_index(labels[k][name], vocab) for k in keys], dtype=np.int64),
            scores=scores[name],
        )
        for name, vocab in FIELDS.items()
    }
    embeddings = np.stack([row.embedding for row in rows])
    return fit_adapter(embeddings, fields, FIELDS, params, center=center, scale=scale)


def apply_adapter(adapter: Adapter, images: Mapping[str, ScoredImage]) -> dict[str, Adapted]:
    """The adapted labels of ``images`` (only those the adapter changes)."""
    keys = list(images)
    if adapter.empty or not keys:
        return {}
    rows = [images[key] for key in keys]
    answered, scores = field_inputs(rows)
    changed = adapter.apply(np.stack([row.embedding for row in rows]), answered, scores)
    out: dict[str, Adapted] = {}
    for i, key in enumerate(keys):
        picks = {
            name: FIELDS[name][int(values[i])]
            for name, values in changed.items()
            if values[i] != NO_CHANGE
        }
        if picks:
            out[key] = Adapted(picks.get("image_type"), picks.get("color"))
    return out


def _normalisation(classifier: Classifier) -> tuple[np.ndarray | None, np.ndarray | None]:
    # Similarities are taken in the space the type head reads: standardised embeddings.
    scale = classifier.embedding_scale()
    return (None, None) if scale is None else scale


class AdvertiserAdapters:
    """Adapts answers per advertiser; adapters cached in memory (thread-safe).

    Args:
        default: ``CARTAG_ADVERTISER_ADAPTATION``: whether advertisers without their own
            setting adapt.
        params: The rules and constants (default: the calibrated ones).
    """

    def __init__(self, default: bool, params: AdaptationParams | None = None) -> None:
        self.default = default
        self.params = params or AdaptationParams()
        self._lock = threading.Lock()
        self._cache: dict[str, tuple[tuple[object, ...], Adapter]] = {}
        self.fits = 0  # adapters fitted (tests, logs)

    def adapt(
        self,
        session: Session,
        advertiser_id: str,
        classifier: Classifier,
        image_keys: Collection[str],
    ) -> dict[str, Adapted]:
        """The adapted answers of ``image_keys`` for this advertiser (changed ones only).

        Args:
            session: A read session.
            advertiser_id: Whose fixes adapt the answers.
            classifier: The serving model: its backbone names the embeddings used.
            image_keys: The images being answered.

        Returns:
            Image key -> its adapted labels; images the adapter leaves, images without an
            embedding of the serving backbone, and every image of an advertiser with
            adaptation off or without fixes are absent.
        """
        backbone_id = classifier.backbone_id
        if not image_keys or backbone_id is None:
            return {}
        own = advertiser_repo.adaptation_setting(session, advertiser_id)
        if not enabled(own, self.default):
            return {}
        fixes = fix_repo.fixes_in_name_of(session, advertiser_id)
        if not fixes:
            return {}
        key = (classifier.version, backbone_id, tuple((f.fix_id, f.updated_at) for f in fixes))
        adapter = self._cached(advertiser_id, key)
        if adapter is None:
            fixed = embedding_repo.scored_images(session, backbone_id, {f.image_key for f in fixes})
            center, scale = _normalisation(classifier)
            adapter = fit_from_fixes(fixes, fixed, self.params, center, scale)
            self._store(advertiser_id, key, adapter)
        if adapter.empty:
            return {}
        images = embedding_repo.scored_images(
            session, backbone_id, image_keys, scores=adapter.needs_scores
        )
        return apply_adapter(adapter, images)

    def _cached(self, advertiser_id: str, key: tuple[object, ...]) -> Adapter | None:
        with self._lock:
            entry = self._cache.pop(advertiser_id, None)
            if entry is None or entry[0] != key:
                return None
            self._cache[advertiser_id] = entry  # most recently used last
            return entry[1]

    def _store(self, advertiser_id: str, key: tuple[object, ...], adapter: Adapter) -> None:
        with self._lock:
            self.fits += 1
            self._cache.pop(advertiser_id, None)
            self._cache[advertiser_id] = (key, adapter)
            while len(self._cache) > MAX_CACHED:
                self._cache.pop(next(iter(self._cache)))
