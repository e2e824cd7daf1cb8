"""The sweep's features of a stored dataset: its backbone vectors are the service's."""

from __future__ import annotations

import numpy as np

from cartag.clock import FakeClock
from cartag.imaging.decode import decode_image
from cartag.imaging.keys import content_sha256
from cartag.models.classifier import BUNDLED_DIR, Classifier, EmbeddingClassifier
from cartag.models.folder import backbone_spec
from cartag.settings import Settings
from cartag.store.blobs import LocalBlobStore
from cartag.store.db import Database
from cartag.store.embeddings import load_embeddings
from cartag.training.sweep.sweep_data import FeatureSource, load_view
from tests.support.images import noise_jpeg_bytes
from tests.support.sweep_data import Example, make_frozen_dataset


def test_large_photos_are_embedded_at_the_services_draft_size(
    sqlite_db: Database, settings: Settings, classifier: Classifier
) -> None:
    # An 800 x 600 JPEG: the service decodes it at 1/4 (200 x 150, the draft size of a
    # 224 network); a 320 px decode would keep it whole. The sweep writes the same cache
    # rows as the service (same backbone id), so it must compute the same vectors.
    assert isinstance(classifier, EmbeddingClassifier)
    photos = [noise_jpeg_bytes(800, 600, seed=seed) for seed in range(4)]
    splits = ("train", "train", "test", "test")
    examples = [Example(d, "Dealer", "Red", s) for d, s in zip(photos, splits, strict=True)]
    settings = settings.model_copy(update={"engine": "torch"})
    clock = FakeClock()
    ref = make_frozen_dataset(sqlite_db, settings, clock, examples)
    view = load_view(sqlite_db, ref)
    source = FeatureSource(sqlite_db, LocalBlobStore(settings.data_dir / "blobs"), settings, clock)
    features = source.features(view, backbone_spec(BUNDLED_DIR))

    served = [
        decode_image(data, max_pixels=10**8, draft_size=classifier.draft_size()).image
        for data in photos
    ]
    assert {image.size for image in served} == {(200, 150)}
    vectors = classifier.backbone.embed_images([classifier.prepare(im) for im in served])
    expected = {content_sha256(d): v for d, v in zip(photos, vectors, strict=True)}
    assert features.backbone_id == classifier.backbone_id
    with sqlite_db.read() as session:
        cached = load_embeddings(session, features.backbone_id, view.shas)
    for row, sha in enumerate(view.shas):
        # float16 in the cache; torch here, onnx in the classifier fixture.
        np.testing.assert_allclose(features.emb[row], expected[sha], atol=2e-2)
        np.testing.assert_allclose(cached[sha], expected[sha], atol=2e-2)
