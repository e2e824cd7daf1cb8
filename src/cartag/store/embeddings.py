"""Repository functions for cached backbone embeddings."""

from __future__ import annotations

import datetime as dt
from collections.abc import Collection, Mapping
from dataclasses import dataclass

import numpy as np
from sqlalchemy import null, select
from sqlalchemy.orm import Session

from cartag.store.tables import EmbeddingRow, ImageRow
from cartag.store.upsert import chunked, upsert

_STORED = np.dtype("<f2")


def save_embeddings(
    session: Session, backbone_id: str, vectors: Mapping[str, np.ndarray], now: dt.datetime
) -> None:
    """Store embeddings (each shape (D,)) by content SHA-256; existing rows are kept."""
    rows = []
    for sha, vector in vectors.items():
        flat = np.asarray(vector, dtype=np.float32).reshape(-1)
        rows.append(
            {
                "content_sha256": sha,
                "backbone_id": backbone_id,
                "dim": int(flat.shape[0]),
                "vector": flat.astype(_STORED).tobytes(),
                "created_at": now,
            }
        )
    upsert(session, EmbeddingRow, rows, index_elements=["content_sha256", "backbone_id"], update=[])


def load_embeddings(
    session: Session, backbone_id: str, shas: Collection[str]
) -> dict[str, np.ndarray]:
    """Embeddings by content SHA-256 as float32 arrays of shape (D,); missing ones are absent."""
    found: dict[str, np.ndarray] = {}
    for chunk in chunked(set(shas)):
        stmt = select(EmbeddingRow).where(
            EmbeddingRow.backbone_id == backbone_id,
            EmbeddingRow.content_sha256.in_(chunk),
        )
        for row in session.scalars(stmt):
            found[row.content_sha256] = np.frombuffer(row.vector, dtype=_STORED).astype(np.float32)
    return found


@dataclass(frozen=True)
class ScoredImage:
    """A stored image's model answer and scores, with its embedding of one backbone.

    Attributes:
        image_type: The model's stored type.
        color: The model's stored color (None: a Placeholder, or no color).
        type_scores: Probability per type (None: not stored).
        color_scores: Probability per color (None: not stored, e.g. a vendor's color).
        embedding: float32 (D,).
    """

    image_type: str | None
    color: str | None
    type_scores: dict[str, float] | None
    color_scores: dict[str, float] | None
    embedding: np.ndarray


def scored_images(
    session: Session, backbone_id: str, image_keys: Collection[str], *, scores: bool = True
) -> dict[str, ScoredImage]:
    """Images by key with their answer, scores and embedding of ``backbone_id``.

    Images without an embedding of that backbone are absent. ``scores`` False leaves
    the score vectors out (None): decoding them costs more than the rest of a row.
    """
    found: dict[str, ScoredImage] = {}
    score_columns = (ImageRow.type_scores, ImageRow.color_scores) if scores else (null(), null())
    for chunk in chunked(sorted(set(image_keys))):
        stmt = (
            select(
                ImageRow.image_key,
                ImageRow.image_type,
                ImageRow.color,
                *score_columns,
                EmbeddingRow.vector,
            )
            .join(
                EmbeddingRow,
                (EmbeddingRow.content_sha256 == ImageRow.content_sha256)
                & (EmbeddingRow.backbone_id == backbone_id),
            )
            .where(ImageRow.image_key.in_(chunk))
        )
        rows = session.execute(stmt).all()
        if not rows:
            continue
        # One decode for the chunk: per row, the conversion cost more than the read.
        vectors = np.frombuffer(b"".join(row[5] for row in rows), dtype=_STORED)
        vectors = vectors.reshape(len(rows), -1).astype(np.float32)
        for (key, image_type, color, type_scores, color_scores, _), vector in zip(
            rows, vectors, strict=True
        ):
            found[key] = ScoredImage(image_type, color, type_scores, color_scores, vector)
    return found
