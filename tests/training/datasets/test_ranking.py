"""Label-issue ranking: out-of-fold confident learning on cached embeddings."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from PIL import Image

from cartag.imaging.decode import decode_image
from cartag.models.classifier import Classifier, EmbeddingClassifier
from cartag.store import embeddings as embedding_repo
from cartag.store.blobs import MemoryBlobStore
from cartag.store.db import Database
from cartag.training.datasets.ranking import balance_report, ensure_embeddings, rank_items
from tests.support.factories import NOW
from tests.training.dataset_images import pattern_jpeg


def _clusters(n: int = 40, seed: int = 0) -> tuple[np.ndarray, list[tuple[str | None, str | None]]]:
    rng = np.random.default_rng(seed)
    centers = {"Dealer": np.full(8, 2.0), "Stock": np.full(8, -2.0)}
    labels: list[tuple[str | None, str | None]] = []
    rows = []
    for i in range(n):
        label = "Dealer" if i % 2 else "Stock"
        rows.append(centers[label] + rng.normal(0, 0.5, 8))
        labels.append((label, None))
    return np.asarray(rows), labels


def test_a_mislabelled_example_ranks_first_and_is_flagged() -> None:
    emb, labels = _clusters()
    labels[7] = ("Stock", None)  # a Dealer-cluster point labelled Stock
    ranking = rank_items(
        emb, labels, [f"g{i}" for i in range(len(labels))], np.ones(len(labels), dtype=bool)
    )
    scores = [s.suspicion if s else -1.0 for s in ranking.scores]
    assert int(np.argmax(scores)) == 7
    top = ranking.scores[7]
    assert top is not None and top.flagged and top.suspicion > 1
    assert (top.model_label, top.task) == ("Dealer", "image_type")
    others = [s for i, s in enumerate(ranking.scores) if i != 7 and s is not None]
    assert all(s.suspicion < 1 for s in others)
    assert ranking.summary["tasks"]["image_type"]["flagged"] == 1
    assert "skipped" in ranking.summary["tasks"]["color"]  # no color labels at all


def test_untrainable_items_are_scored_but_not_learned_from() -> None:
    emb, labels = _clusters()
    trainable = np.ones(len(labels), dtype=bool)
    trainable[3] = False
    ranking = rank_items(emb, labels, [f"g{i}" for i in range(len(labels))], trainable)
    assert ranking.scores[3] is not None


def test_too_few_examples_skip_the_task_with_a_reason() -> None:
    emb, labels = _clusters(n=4)
    ranking = rank_items(emb, labels, ["a", "b", "c", "d"], np.ones(4, dtype=bool))
    assert ranking.scores == [None] * 4
    assert "needs" in ranking.summary["tasks"]["image_type"]["skipped"]


def test_balance_report_counts_per_split() -> None:
    report = balance_report(
        [("Dealer", "Red"), ("Dealer", None), ("Stock", "Red")], ["train", "test", "train"]
    )
    assert report["image_type"]["Dealer"] == {"n": 2, "share": 0.6667, "train": 1, "held_out": 1}
    assert report["color"]["(unlabelled)"]["n"] == 1


class _Counting:
    """The real backbone, counting the images it embeds."""

    def __init__(self, classifier: Classifier) -> None:
        assert isinstance(classifier, EmbeddingClassifier)
        self.backbone = classifier.backbone
        self.backbone_id = self.backbone.backbone_id
        self.input_size = self.backbone.input_size
        self.embedded = 0

    def embed_images(self, images: Sequence[Image.Image]) -> np.ndarray:
        self.embedded += len(images)
        return self.backbone.embed_images(images)


def test_embeddings_are_computed_once_and_cached_in_the_store(
    sqlite_db: Database, classifier: Classifier
) -> None:
    blobs = MemoryBlobStore()
    items = []
    for seed in range(3):
        data = pattern_jpeg(seed)
        path = blobs.put(data, "jpg")
        items.append((path.rsplit("/", 1)[1].split(".")[0], path))
    embedder = _Counting(classifier)

    def load(data: bytes) -> Image.Image:
        return decode_image(data, max_pixels=10**8).image

    first = ensure_embeddings(sqlite_db, blobs, embedder, items, load=load, now=NOW)
    again = ensure_embeddings(sqlite_db, blobs, embedder, items, load=load, now=NOW)
    assert first.shape == (3, embedder.backbone.embedding_dim) and embedder.embedded == 3
    np.testing.assert_allclose(first, again, atol=1e-2)  # cached as float16
    with sqlite_db.read() as session:
        stored = embedding_repo.load_embeddings(session, embedder.backbone_id, [items[0][0]])
    assert set(stored) == {items[0][0]}
