"""Classify image files on disk (``cartag predict``, evaluation).

Finding the files is :func:`cartag.imaging.files.find_images`.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from PIL import Image

from cartag.errors import DecodeError
from cartag.imaging.decode import decode_image
from cartag.models.classifier import Classifier
from cartag.settings import DEFAULT_LOW_CONFIDENCE_THRESHOLD


def predict_files(
    classifier: Classifier,
    files: Iterable[Path],
    *,
    max_pixels: int,
    batch_size: int = 32,
    low_confidence_threshold: float = DEFAULT_LOW_CONFIDENCE_THRESHOLD,
) -> Iterator[dict[str, Any]]:
    """Yield one record per file, in order.

    Each file is decoded as a classify decodes downloaded bytes (the model's draft size),
    so a file gets the answer the API gives the same bytes, and an evaluation measures
    the answers users get.

    Records are ``{"path", "image_type", "color", "type_scores", "color_scores",
    "confidence", "low_confidence"}`` (``low_confidence``: confidence below
    ``low_confidence_threshold``); a file that can't be read yields
    ``image_type`` None and an ``error`` reason instead of stopping the run.
    """
    batch: list[tuple[Path, Image.Image]] = []
    for path in files:
        try:
            decoded = decode_image(
                path.read_bytes(), max_pixels=max_pixels, draft_size=classifier.draft_size()
            )
        except (DecodeError, OSError) as exc:
            yield from _flush(classifier, batch, low_confidence_threshold)
            batch = []
            reason = exc.reason if isinstance(exc, DecodeError) else "unreadable"
            yield {
                "path": str(path),
                "image_type": None,
                "color": None,
                "type_scores": {},
                "color_scores": {},
                "error": reason,
            }
            continue
        batch.append((path, decoded.image))
        if len(batch) >= batch_size:
            yield from _flush(classifier, batch, low_confidence_threshold)
            batch = []
    yield from _flush(classifier, batch, low_confidence_threshold)


def _flush(
    classifier: Classifier, batch: list[tuple[Path, Image.Image]], low_confidence_threshold: float
) -> Iterator[dict[str, Any]]:
    if not batch:
        return
    predictions = classifier.predict([image for _, image in batch])
    for (path, _), p in zip(batch, predictions, strict=True):
        yield {
            "path": str(path),
            "image_type": p.image_type,
            "color": p.color,
            "type_scores": {k: round(v, 6) for k, v in p.type_scores.items()},
            "color_scores": {k: round(v, 6) for k, v in p.color_scores.items()},
            "confidence": round(p.confidence, 6),
            "low_confidence": p.confidence < low_confidence_threshold,
        }
