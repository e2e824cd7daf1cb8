"""Repository functions for cached backbone embeddings."""

from __future__ import annotations

import datetime as dt
from collections.abc import Collection, Mapping

import numpy as np
from sqlalchemy import select
from sqlalchemy.orm import Session

from cartag.store.tables import EmbeddingRow
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
