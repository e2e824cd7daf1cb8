"""The world of the issue-17 simulation: photos, the global model's answers, staff fixing.

:func:`build_world` embeds the shared photos (through the cache) and answers them with a
global model that never saw them; :func:`seed_store` puts those answers, scores and
embeddings in a store; :func:`simulate` has staff fix one advertiser's wrong answers a
batch at a time through the serving code (:func:`cartag.pipeline.fixes.apply_fix`, the
fix page's listing with :class:`cartag.pipeline.adaptation.AdvertiserAdapters`) and
measures its images not fixed yet after each batch. The report and the command line:
:mod:`benchmarks.advertiser_adaptation`.
"""

from __future__ import annotations

import hashlib
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from benchmarks.cross_source import (
    build_table,
    fit_color,
    fit_type,
    hyper_parameters,
    load_inputs,
    type_train_folds,
)
from cartag.clock import FakeClock
from cartag.models.adaptation import AdaptationParams
from cartag.models.classifier import BUNDLED_DIR, Classifier, Prediction
from cartag.pipeline.adaptation import AdvertiserAdapters
from cartag.pipeline.fixes import Author, apply_fix
from cartag.pipeline.inventory import MAX_LIMIT, ImageFilter, Listed, list_images
from cartag.store import advertisers as advertiser_repo
from cartag.store import embeddings as embedding_repo
from cartag.store import fixes as fix_repo
from cartag.store import images as image_repo
from cartag.store.db import Database
from cartag.training.datasets import all_sources
from cartag.training.datasets.sources import TYPE_TRAIN, VCOR, VCR
from cartag.training.datasets.type_labels import TYPE_LABELS_PATH
from cartag.training.evaluation import cross_source as cs
from cartag.vocab import COLORS, IMAGE_TYPES

BACKBONE_ID = "simulation-backbone"
VERSION = "simulation-global"
ARMS: dict[str, AdaptationParams | None] = {
    "all": AdaptationParams(),
    "no-prior": AdaptationParams(prior=False),
    "nearest": AdaptationParams(repeated=False, prior=False),
    "repeated": AdaptationParams(nearest=False, prior=False),
    "off": None,  # the advertiser's own adapt_answers = false, the default on
}
MIN_AFFECTED_ERRORS = 40


def _progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


class SimulationModel(Classifier):
    """The global model as the store knows it: a version, a backbone id and its scale.

    It never predicts: the answers were stored before the simulation starts.
    """

    version = VERSION
    backbone_id = BACKBONE_ID

    def __init__(self, mean: np.ndarray, std: np.ndarray) -> None:
        self._scale = (mean, std)

    def embedding_scale(self) -> tuple[np.ndarray, np.ndarray]:
        return self._scale

    def predict(self, images: Sequence[Image.Image]) -> list[Prediction]:
        raise NotImplementedError("the simulation's answers are stored in advance")


@dataclass
class World:
    """The simulated photos and the global model's answers.

    Attributes:
        keys: N image keys (``sim:<data path>``).
        emb: float32 (N, D) embeddings.
        type_p: float (N, 3) the global type head's probabilities.
        color_p: float (N, 12) the global color head's probabilities.
        y_type: (N,) true type index (-1: none).
        y_color: (N,) true color index (-1: none).
        groups: Advertiser name -> row indices.
        model: The global model as the store knows it.
        vcr: Row indices of vcr-train (the calibration set).
    """

    keys: list[str]
    emb: np.ndarray
    type_p: np.ndarray
    color_p: np.ndarray
    y_type: np.ndarray
    y_color: np.ndarray
    groups: dict[str, list[int]]
    model: SimulationModel
    vcr: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))


def build_world(data: Path, cache_dir: Path, threads: int) -> World:
    """Embed (through the cache), fit global heads that never see an advertiser's photos.

    vcor's color folders are dealt into two folds; the photos of one fold are answered
    by heads fitted on vcr-train + the other fold's folders (+ generated placeholders
    for the type), so a folder's own photos are never trained on, while vcor's look is
    (as a deployed model would know the marketplace's photos). type-train's photos are
    answered by a type head fitted on vcr + vcor + placeholders (no type-train).
    """
    inputs = load_inputs(data, cache_dir, TYPE_LABELS_PATH, threads)
    fold = type_train_folds(inputs, 5)
    table = build_table(inputs, fold)
    hp = hyper_parameters(BUNDLED_DIR, "fp32")
    src = np.asarray(table.sources)
    n = len(inputs.rows)
    folders = np.asarray(
        [all_sources.folder(r.path) if r.source == VCOR else "" for r in inputs.rows]
        + [""] * (len(table.keys) - n)
    )
    names = sorted({f for f in folders.tolist() if f})
    vcor_fold = np.full(len(table.keys), -1)
    for k, name in enumerate(names):
        vcor_fold[folders == name] = k % 2
    typed, colored = table.y_type >= 0, table.y_color >= 0
    base_type = np.isin(src, [VCR, cs.PLACEHOLDER]) & typed
    type_p = np.zeros((n, len(IMAGE_TYPES)))
    color_p = np.zeros((n, len(COLORS)))
    type_head = None
    for k in (0, 1):
        test = np.flatnonzero(vcor_fold[:n] == k)
        other = (src == VCOR) & (vcor_fold != k)
        type_split = cs.Split(
            f"vcor fold {k}", "image_type", np.flatnonzero(base_type | (other & typed)), test
        )
        color_split = cs.Split(
            f"vcor fold {k}", "color", np.flatnonzero(((src == VCR) | other) & colored), test
        )
        # The global model sees none of this fold's photos, nor any of type-train's.
        for split in (type_split, color_split):
            assert not set(split.train.tolist()) & set(test.tolist())
            assert TYPE_TRAIN not in set(src[split.train].tolist())
        _progress(f"fitting the global heads for vcor fold {k} ({len(test)} photos) ...")
        head = fit_type(table, type_split, hp, select=False)
        color_head, _ = fit_color(inputs, table, color_split, hp, select=False)
        type_p[test] = head.predict_proba(table.emb[test])
        color_p[test] = color_head.predict_proba(table.color_in[test])
    rest = np.flatnonzero(src[:n] != VCOR)
    all_split = cs.Split(
        "type-train",
        "image_type",
        np.flatnonzero(np.isin(src, [VCR, VCOR, cs.PLACEHOLDER]) & typed),
        rest,
    )
    assert TYPE_TRAIN not in set(src[all_split.train].tolist())
    _progress("fitting the global type head for type-train ...")
    type_head = fit_type(table, all_split, hp, select=False)
    type_p[rest] = type_head.predict_proba(table.emb[rest])
    color_p[rest] = color_head.predict_proba(table.color_in[rest])  # (no color labels there)
    groups: dict[str, list[int]] = {}
    for i, row in enumerate(inputs.rows):
        if row.source == VCOR:
            groups.setdefault(f"vcor {all_sources.folder(row.path)}", []).append(i)
        elif row.source == TYPE_TRAIN and row.image_type:
            groups.setdefault(f"type-train {row.image_type}", []).append(i)
    return World(
        keys=[f"sim:{row.path}" for row in inputs.rows],
        emb=table.emb[:n],
        type_p=type_p,
        color_p=color_p,
        y_type=table.y_type[:n],
        y_color=table.y_color[:n],
        groups=groups,
        model=SimulationModel(type_head.feature_mean, type_head.feature_std),
        vcr=np.flatnonzero(src[:n] == VCR),
    )


def answers(world: World) -> tuple[np.ndarray, np.ndarray]:
    """The global model's type and color answers (-1: no color, for a Placeholder)."""
    types = world.type_p.argmax(axis=1)
    colors = world.color_p.argmax(axis=1)
    colors[types == IMAGE_TYPES.index("Placeholder")] = -1
    return types, colors


def wrong(world: World, i: int, image_type: str | None, color: str | None) -> bool:
    """Whether an answer is wrong: its type, or its color where the photo has one."""
    if world.y_type[i] >= 0 and image_type != IMAGE_TYPES[world.y_type[i]]:
        return True
    return bool(world.y_color[i] >= 0 and color != COLORS[world.y_color[i]])


def seed_store(db: Database, world: World, clock: FakeClock) -> None:
    """Store the global model's answers, scores and embeddings of every simulated image."""
    types, colors = answers(world)
    rows = [
        image_repo.NewImage(
            image_key=key,
            url=f"https://advertiser.example/{key[4:]}",
            content_sha256=hashlib.sha256(key.encode()).hexdigest(),
            phash=None,
            width=224,
            height=224,
            byte_size=None,
            image_type=IMAGE_TYPES[types[i]],
            color=COLORS[colors[i]] if colors[i] >= 0 else None,
            type_scores=dict(zip(IMAGE_TYPES, world.type_p[i].tolist(), strict=True)),
            color_scores=dict(zip(COLORS, world.color_p[i].tolist(), strict=True)),
            confidence=float(world.type_p[i].max()),
            model_version=VERSION,
        )
        for i, key in enumerate(world.keys)
    ]
    with db.write() as session:
        for start in range(0, len(rows), 1000):
            image_repo.save_images(session, rows[start : start + 1000], clock.now())
        vectors = {row.content_sha256: world.emb[i] for i, row in enumerate(rows)}
        embedding_repo.save_embeddings(session, BACKBONE_ID, vectors, clock.now())


def listing(
    db: Database, advertiser: str, adapters: AdvertiserAdapters, model: Classifier
) -> list[Listed]:
    """Every image of the advertiser as the fix page lists it now (all pages, in order)."""

    def adapt(session: Any, advertiser_id: str, keys: Any) -> Any:
        return adapters.adapt(session, advertiser_id, model, keys)

    items: list[Listed] = []
    page = 1
    while True:
        got = list_images(db, advertiser, ImageFilter(), page=page, limit=MAX_LIMIT, adapt=adapt)
        items.extend(got.items)
        if page >= got.pages:
            return items
        page += 1


@dataclass
class Step:
    fixes: int
    remaining: int
    errors: int
    changed: int
    adapted_right: int

    @property
    def error_rate(self) -> float:
        return self.errors / self.remaining if self.remaining else 0.0

    @property
    def changed_rate(self) -> float:
        return self.changed / self.remaining if self.remaining else 0.0


def simulate(
    db: Database,
    world: World,
    clock: FakeClock,
    group: str,
    arm: str,
    adapters: AdvertiserAdapters,
    batch: int,
    max_fixes: int,
) -> list[Step]:
    """One advertiser under one arm: fixes in batches, measured after each."""
    advertiser = f"{group}|{arm}"
    rows = world.groups[group]
    row_of = {world.keys[i]: i for i in rows}
    with db.write() as session:
        advertiser_repo.record_advertiser_images(
            session, advertiser, dict.fromkeys(world.keys[i] for i in rows), clock.now()
        )
        if arm == "off":
            advertiser_repo.set_advertiser(
                session, advertiser, adapt_answers=False, now=clock.now()
            )
    steps: list[Step] = []
    made = 0
    while True:
        items = listing(db, advertiser, adapters, world.model)
        unfixed = [item for item in items if not item.fixed]
        errors = changed = right = 0
        for item in unfixed:
            i = row_of[item.image.image_key]
            answer = item.answer
            bad = wrong(world, i, answer.image_type, answer.color)
            errors += bad
            if "advertiser_model" in (answer.type_source, answer.color_source):
                changed += 1
                right += not bad
        steps.append(Step(made, len(unfixed), errors, changed, right))
        if made >= max_fixes:
            return steps
        todo = [
            item for item in unfixed
            if wrong(world, row_of[item.image.image_key], item.answer.image_type, item.answer.color)
        ][:batch]  # fmt: skip
        if not todo:
            return steps  # nothing wrong is left: the curve ends (read as flat after)
        with db.write() as session:
            for item in todo:
                i = row_of[item.image.image_key]
                true_type = IMAGE_TYPES[world.y_type[i]] if world.y_type[i] >= 0 else None
                true_color = COLORS[world.y_color[i]] if world.y_color[i] >= 0 else None
                type_wrong = true_type is not None and item.answer.image_type != true_type
                color_wrong = true_color is not None and item.answer.color != true_color
                # A color for a photo stored as a Placeholder needs its type too.
                stored_placeholder = item.image.image_type == "Placeholder"
                fix_type = true_type if type_wrong or (color_wrong and stored_placeholder) else None
                clock.advance(1)
                apply_fix(
                    session,
                    image_key=item.image.image_key,
                    advertiser_id=advertiser,
                    author=Author("simulated-staff"),
                    scope=fix_repo.ADVERTISER,
                    image_type=fix_type,
                    color=true_color if color_wrong and true_type != "Placeholder" else None,
                    comment=None,
                    clock=clock,
                )
                made += 1


def at(steps: Sequence[Step], fixes: int) -> Step:
    """The step after ``fixes`` fixes (the last one when the curve ended before)."""
    for step in steps:
        if step.fixes >= fixes:
            return step
    return steps[-1]
