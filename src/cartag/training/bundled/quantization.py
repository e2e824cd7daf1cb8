"""The bundled model's int8 backbone: which photos calibrate it, and its heads.

The ranges are measured on :data:`CALIBRATION_PHOTOS` photos of the build's training
split, drawn deterministically and evenly from every real source (never a held-out
photo), by :func:`cartag.training.fitting.quantization.write_ranges`; the corpus is then
embedded again with the int8 backbone the service makes from them, and its heads are
fitted with the float heads' recipe.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Final

import numpy as np

from cartag.models.backbone import Backbone, network_identity
from cartag.models.heads import LinearHead, MLPHead
from cartag.models.onnx_export import export_onnx
from cartag.models.quantization import QUANTIZATION_NAME, Quantization, QuantOptions
from cartag.training.bundled.corpus import PLACEHOLDER_SOURCE, Corpus, reembed
from cartag.training.bundled.heads import HeadRecipe, fit_heads, same_hyper_parameters
from cartag.training.datasets.dataset import file_loader
from cartag.training.fitting.quantization import (
    CALIBRATION_BATCH,
    CALIBRATION_PHOTOS,
    INT8_HEADS,
    write_ranges,
)

# Salt of the hash order that picks the calibration photos (see calibration_rows).
_SALT: Final[str] = "cartag-int8-calibration-v1:"


def calibration_rows(corpus: Corpus, n: int = CALIBRATION_PHOTOS) -> list[int]:
    """The corpus rows whose photos calibrate the int8 backbone.

    Training-split real photos only; each source gets ``n // sources`` (the first
    sources one more while ``n`` is not spent), the photos of a source taken in
    the order of ``sha256(salt + key)``.

    Args:
        corpus: A corpus of several sources (:func:`~.corpus.build_corpus_all`).
        n: Photos in all.

    Returns:
        Row indices, source by source.
    """
    sources = [s for s in dict.fromkeys(corpus.sources) if s != PLACEHOLDER_SOURCE]
    rows: list[int] = []
    for k, source in enumerate(sources):
        quota = n // len(sources) + (1 if k < n % len(sources) else 0)
        mine = [
            i
            for i, s in enumerate(corpus.sources)
            if s == source and not corpus.holdout[i] and corpus.files[i] is not None
        ]
        mine.sort(key=lambda i: hashlib.sha256((_SALT + corpus.keys[i]).encode()).hexdigest())
        rows += mine[:quota]
    return rows


def _batches(backbone: Backbone, files: Sequence[Path]) -> Iterator[np.ndarray]:
    """float32 (B, 3, S, S) inputs of ``files``, loaded as the build loads them."""
    load = file_loader(files)
    for start in range(0, len(files), CALIBRATION_BATCH):
        stop = min(start + CALIBRATION_BATCH, len(files))
        yield backbone.preprocess([load(i) for i in range(start, stop)])


def build_quantization(
    backbone: Backbone,
    corpus: Corpus,
    out_dir: Path,
    *,
    method: str = "minmax",
    n: int = CALIBRATION_PHOTOS,
    options: QuantOptions | None = None,
) -> Quantization:
    """Measure the ranges, quantize once to record the reference, write ``quantization.json``.

    Args:
        backbone: The float backbone of the build, on the torch engine.
        corpus: The build's corpus (several sources).
        out_dir: The model folder.
        method: Calibration method (:func:`cartag.models.quantize.calibrate`).
        n: Calibration photos.
        options: Quantizer options (default:
            :func:`cartag.training.fitting.quantization.default_options`, the stem in float).

    Returns:
        What was written.
    """
    network = network_identity(backbone.variant, backbone.weights_path, backbone.backbone_id)
    fp32 = export_onnx(backbone.network, backbone.input_size, network)
    rows = calibration_rows(corpus, n)
    files = [Path(str(corpus.files[i])) for i in rows]
    calibration: dict[str, Any] = {
        "photos": len(rows),
        "photos_by_source": {
            s: sum(corpus.sources[i] == s for i in rows)
            for s in dict.fromkeys(corpus.sources[i] for i in rows)
        },
        "chosen": (
            "training-split real photos only, an even share per source, each source's "
            f"photos in the order of sha256('{_SALT}' + labels path); "
            "preprocessed as the service does (Backbone.preprocess)"
        ),
        "photos_sha256": hashlib.sha256(
            "\n".join(corpus.content[i] for i in rows).encode()
        ).hexdigest(),
    }
    return write_ranges(
        backbone,
        fp32,
        _batches(backbone, files),
        calibration,
        out_dir / QUANTIZATION_NAME,
        method=method,
        options=options,
    )


@dataclass(frozen=True)
class Int8Build:
    """What :func:`build_int8` needs of the build besides the backbone and corpus.

    Attributes:
        cache_dir: Embedding cache folder (also holds the ONNX files, ``onnx/``).
        data_dir: The build's data root.
        sources: The build's sources.
        recipe: The head recipe of the float heads, used unchanged.
        now: The build's time.
        threads: Intra-op threads of the int8 engine (0 = physical cores).
        method: Calibration method.
    """

    cache_dir: Path
    data_dir: Path
    sources: Sequence[str] | None
    recipe: HeadRecipe
    now: datetime
    threads: int = 0
    method: str = "minmax"


def build_int8(
    backbone: Backbone,
    corpus: Corpus,
    out_dir: Path,
    build: Int8Build,
    float_heads: tuple[LinearHead, MLPHead],
) -> tuple[dict[str, Any], str]:
    """Calibrate the int8 backbone, embed the corpus with it, fit its heads.

    The int8 backbone is made the way the service makes it (float export and
    quantization in child processes, from the ``quantization.json`` just written),
    so the heads are fitted on exactly the embeddings the service computes. They are
    fitted with the float heads' recipe and the hyper-parameters the float heads'
    fit chose (:func:`~cartag.training.bundled.heads.same_hyper_parameters`): choosing
    them again flipped the Placeholder offset on a one-photo tie of the out-of-fold
    precision (0.75 -> 0.5) and cost leave-repo-out Placeholder precision 0.996 -> 0.980.

    Args:
        backbone: The build's float backbone (torch engine).
        corpus: The build's corpus, float-embedded.
        out_dir: The model folder (``quantization.json`` and the int8 heads go there).
        build: The rest of the build.
        float_heads: The float type and color heads of this build.

    Returns:
        The config's ``int8`` block, and the heads' digests + int8 backbone id (for
        the model version).
    """
    quantization = build_quantization(backbone, corpus, out_dir, method=build.method)
    int8 = Backbone.load(
        backbone.variant,
        threads=build.threads,
        engine="onnx",
        cache_dir=build.cache_dir,
        weights=backbone.weights_path,
        quantization=out_dir / QUANTIZATION_NAME,
    )
    int8_corpus = reembed(corpus, int8, build.cache_dir, build.recipe.seed)
    recipe = same_hyper_parameters(build.recipe, *float_heads)
    type_head, color_head, _ = fit_heads(
        int8_corpus, int8, build.data_dir, build.cache_dir, build.sources, recipe, build.now
    )
    type_head.save(out_dir / INT8_HEADS["image_type"])
    color_head.save(out_dir / INT8_HEADS["color"])
    block = {
        "quantization": QUANTIZATION_NAME,
        "backbone_id": int8.backbone_id,
        "heads": dict(INT8_HEADS),
        "ranges_sha256": quantization.digest,
        "calibration": quantization.calibration,
    }
    return block, type_head.digest() + color_head.digest() + int8.backbone_id
