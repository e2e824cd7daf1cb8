"""The drift reference of a model folder, from the embeddings of its training data.

:func:`corpus_reference` builds it from a corpus already embedded (the bundled build
does so with the corpus it fits the heads on); :func:`add_reference` adds one to an
existing folder (``cartag models add-reference FOLDER``): it reads which sources,
placeholders and split the folder was trained on from its ``config.json``, embeds them
with the folder's own backbone (its fine-tuned ``backbone.npz`` when it has one) through
the embedding cache, and writes ``reference.npz`` + the ``"reference"`` section. The
reference itself is :mod:`cartag.models.reference`.

The centroids see the training split only (real photos and generated placeholders);
the quantiles are measured on the held-out split, which they never saw.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from cartag.models.backbone import Backbone
from cartag.models.folder import CONFIG_NAME, backbone_spec, read_config
from cartag.models.reference import DEFAULT_K, DriftReference, build_reference, save_reference
from cartag.training.bundled.corpus import Corpus, build_corpus_all


def corpus_reference(
    corpus: Corpus, embedding_id: str, *, k: int = DEFAULT_K, seed: int = 0
) -> tuple[DriftReference, dict[str, Any]]:
    """The reference of a corpus: centroids of its training rows, quantiles of its held-out rows.

    Returns:
        The reference and what it was built from (for ``built_from``).
    """
    held = np.asarray(corpus.holdout, dtype=bool)
    reference = build_reference(
        corpus.emb[~held], corpus.emb[held], embedding_id=embedding_id, k=k, seed=seed
    )
    sources = sorted(set(corpus.sources)) if corpus.sources else ["vcr", "placeholder"]
    built_from = {
        "sources": sources,
        "data_sha256": corpus.data_hash,
        "n_train": int((~held).sum()),
        "n_held_out": int(held.sum()),
        "split": "the model's own training / held-out split (config.json training.split_rule)",
    }
    return reference, built_from


def write_reference(
    folder: Path, reference: DriftReference, built_from: dict[str, Any], *, seed: int = 0
) -> dict[str, Any]:
    """Write ``reference.npz`` and put its section into the folder's ``config.json``.

    Returns:
        The ``"reference"`` section.
    """
    block = save_reference(reference, folder, built_from=built_from, seed=seed)
    config_path = folder / CONFIG_NAME
    config = json.loads(config_path.read_text(encoding="utf-8"))
    config["reference"] = block
    config_path.write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
    return block


def add_reference(
    folder: Path,
    data_root: Path,
    cache_dir: Path,
    *,
    threads: int = 0,
    k: int = DEFAULT_K,
    seed: int = 0,
) -> dict[str, Any]:
    """Build the reference of an existing model folder from the shared data.

    Args:
        folder: A model folder built on several sources (``training.sources``).
        data_root: The shared data root holding those sources.
        cache_dir: Embedding cache folder.
        threads: Backbone threads (0: torch's default).
        k: Centroids.
        seed: k-means seed.

    Returns:
        The ``"reference"`` section written.

    Raises:
        ModelError: The folder is no model folder.
        ValueError: The folder does not record the sources it was trained on.
        FileNotFoundError: A source is missing under ``data_root``.
    """
    config = read_config(folder)
    training = config.get("training") or {}
    sources = training.get("sources")
    if not isinstance(sources, dict) or not sources:
        raise ValueError(
            f"{folder / CONFIG_NAME} does not record the sources it was trained on "
            "(training.sources); rebuild it with `cartag models build-bundled --sources ...`, "
            "which writes the reference itself"
        )
    placeholders = training.get("placeholders") or {}
    spec = backbone_spec(folder, config)
    backbone = Backbone.load(spec.variant, threads=threads, weights=spec.weights)
    expected = config["backbone"].get("backbone_id")
    if expected is not None and expected != backbone.backbone_id:
        raise ValueError(
            f"{folder} names backbone {expected} but its weights load as {backbone.backbone_id}"
        )
    corpus = build_corpus_all(
        data_root,
        list(sources),
        backbone,
        cache_dir,
        int(placeholders.get("n", 0)),
        int(placeholders.get("seed", 0)),
    )
    if corpus.data_hash != training.get("data_sha256", corpus.data_hash):
        raise ValueError(
            f"the data under {data_root} is not what {folder} was trained on "
            f"(data sha256 {corpus.data_hash[:12]}, the folder records "
            f"{str(training['data_sha256'])[:12]}); point --data at the same data"
        )
    reference, built_from = corpus_reference(corpus, backbone.backbone_id, k=k, seed=seed)
    return write_reference(folder, reference, built_from, seed=seed)
