"""Fixtures of the sweep tests: the tiny dataset and its real embeddings."""

from __future__ import annotations

import numpy as np
import pytest

from cartag.models.classifier import Classifier
from tests.support.sweep_data import Example, embed_examples, examples


@pytest.fixture(scope="module")
def tiny_examples() -> list[Example]:
    return examples(seed=0)


@pytest.fixture(scope="module")
def precomputed(classifier: Classifier, tiny_examples: list[Example]) -> dict[str, np.ndarray]:
    """Real lite0 embeddings of the tiny dataset, computed once for the module."""
    return embed_examples(classifier, tiny_examples)
