"""Plain factory functions for review tests: dataset versions and items with real blobs."""

from __future__ import annotations

import datetime as dt
import itertools
from typing import Any

from cartag.store.blobs import BlobStore
from cartag.store.db import Database
from cartag.store.tables import DatasetItemRow, DatasetVersionRow
from tests.support.factories import NOW
from tests.support.images import jpeg_bytes

_counter = itertools.count(1)


def add_version(db: Database, name: str = "cars", number: int = 1, *, status: str = "draft") -> str:
    """Store a dataset version; returns its ref (``NAME@NUMBER``)."""
    ref = f"{name}@{number}"
    with db.write() as session:
        session.add(
            DatasetVersionRow(
                ref=ref,
                name=name,
                number=number,
                status=status,
                created_at=NOW,
                created_by="builder",
                frozen_at=NOW if status == "frozen" else None,
                stats={},
                test_sets=[],
            )
        )
    return ref


def add_item(db: Database, ref: str, blobs: BlobStore | None = None, **values: Any) -> int:
    """Store an item of ``ref``; returns its id.

    With ``blobs``, the item's image (a small one-colour JPEG, distinct per item) is put
    in the blob store and ``blob_path`` points at it.
    """
    n = next(_counter)
    data = jpeg_bytes(80, 60, color=((n * 37) % 256, (n * 91) % 256, (n * 53) % 256))
    row: dict[str, Any] = {
        "content_sha256": f"{n:064x}",
        "blob_path": blobs.put(data, "jpg") if blobs is not None else f"sha256/00/00/{n:064x}.jpg",
        "image_type": "Dealer",
        "color": "Red",
        "split": "train",
        "status": "included",
        "reason": None,
        "provenance": {"source": "fix", "advertiser_id": f"dealer-{n}", "user": "alice"},
        "suspicion": None,
        "model_label": None,
        "model_confidence": None,
    }
    row.update(values)
    with db.write() as session:
        item = DatasetItemRow(version_ref=ref, **row)
        session.add(item)
        session.flush()
        return item.id


def seed_review(db: Database, blobs: BlobStore) -> tuple[str, dict[str, int]]:
    """A draft version with five items to review, and an older frozen version.

    Returns:
        The draft's ref and its item ids by name: ``stock`` (suspicion 0.9, labelled
        Dealer, the model says Stock), ``flagged`` (0.7, advertisers disagree),
        ``placeholder`` (0.4, labelled Dealer/Blue, the model says Placeholder),
        ``calm`` (0.1), ``unranked`` (no suspicion); plus ``unreadable``, excluded by
        an automatic filter (never listed by default).
    """
    add_version(db, "cars", 1, status="frozen")
    ref = add_version(db, "cars", 2)
    ids = {
        "calm": add_item(
            db, ref, blobs, suspicion=0.1, model_label="Dealer", model_confidence=0.97
        ),
        "unranked": add_item(db, ref, blobs, image_type="Stock", color="White"),
        "stock": add_item(
            db, ref, blobs, suspicion=0.9, model_label="Stock", model_confidence=0.93
        ),
        "placeholder": add_item(
            db,
            ref,
            blobs,
            suspicion=0.4,
            color="Blue",
            model_label="Placeholder",
            model_confidence=0.81,
        ),
        "flagged": add_item(
            db,
            ref,
            blobs,
            suspicion=0.7,
            status="flagged",
            reason="conflict",
            model_label="Dealer",
            model_confidence=0.66,
        ),
        "unreadable": add_item(
            db, ref, blobs, suspicion=0.95, status="excluded", reason="unreadable"
        ),
    }
    return ref, ids


def at(minutes: int) -> dt.datetime:
    """A fixed instant ``minutes`` after the factories' NOW."""
    return NOW + dt.timedelta(minutes=minutes)


def _claim(advertiser: str, image_type: str | None, color: str | None) -> dict[str, Any]:
    return {
        "labels": [image_type, color],
        "source": "fix",
        "scope": "advertiser",
        "advertiser_id": advertiser,
        "user": "ann",
    }


def seed_queues(db: Database, blobs: BlobStore) -> tuple[str, dict[str, int]]:
    """:func:`seed_review`'s draft with a type queue and a color queue to review.

    The type queue (suspicion about the type): ``stock`` 0.9, ``typeclash`` 0.6 (flagged:
    dealer-5 said Dealer, dealer-9 said Stock), ``placeholder`` 0.4, ``calm`` 0.1 and
    ``unranked`` (no score: in both queues). The color queue: ``grey`` 0.8 (labelled Red,
    the model says Grey), ``flagged`` 0.7 (now labelled Dealer/Black: dealer-42 said
    Black, dealer-77 said Grey), ``white`` 0.3 and ``unranked``.

    Returns:
        The draft's ref and its item ids by name.
    """
    ref, ids = seed_review(db, blobs)
    with db.write() as session:
        flagged = session.get(DatasetItemRow, ids["flagged"])
        assert flagged is not None
        flagged.color = "Black"
        flagged.provenance = {
            **flagged.provenance,
            "conflict": [
                _claim("dealer-42", "Dealer", "Black"),
                _claim("dealer-77", "Dealer", "Grey"),
            ],
        }
    ids["grey"] = add_item(db, ref, blobs, suspicion=0.8, model_label="Grey", model_confidence=0.88)
    ids["white"] = add_item(
        db, ref, blobs, suspicion=0.3, color="Black", model_label="White", model_confidence=0.71
    )
    ids["typeclash"] = add_item(
        db,
        ref,
        blobs,
        suspicion=0.6,
        status="flagged",
        reason="conflict",
        model_label="Stock",
        model_confidence=0.55,
        provenance={
            "source": "fix",
            "advertiser_id": "dealer-5",
            "conflict": [_claim("dealer-5", "Dealer", "Red"), _claim("dealer-9", "Stock", "Red")],
        },
    )
    return ref, ids
