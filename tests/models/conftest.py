"""Model fixtures: the bundled classifier is loaded once per session (root ``classifier``)."""

from __future__ import annotations

import pytest

from cartag.models.backbone import Backbone
from cartag.models.classifier import Classifier, EmbeddingClassifier


@pytest.fixture(scope="session")
def embedding_classifier(classifier: Classifier) -> EmbeddingClassifier:
    """The session's bundled model, typed as the concrete implementation."""
    assert isinstance(classifier, EmbeddingClassifier)
    return classifier


@pytest.fixture(scope="session")
def backbone(embedding_classifier: EmbeddingClassifier) -> Backbone:
    """The bundled model's backbone (shared, so loaded once)."""
    return embedding_classifier.backbone


@pytest.fixture(scope="session")
def packaged_backbone() -> Backbone:
    """EfficientNet-Lite0 with its pip package's ImageNet weights (not fine-tuned)."""
    return Backbone.load("efficientnet-lite0")
