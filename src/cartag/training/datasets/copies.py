"""Which labels carry to a copy: a fixed or proposed image whose URL now serves other bytes.

A dataset build downloads each fixed image (and each proposed candidate) again. When the
URL now serves other bytes whose pHash is within ``CARTAG_DATASET_NEAR_DUPLICATE_DISTANCE``
of the stored image's, they are taken for the same picture, re-encoded or resized, and
the stored labels go with them. The pHash is taken in grey, though, so a maker's render
of the same car in another color passes that test too (as it does for the serving
pipeline's fixes, :func:`cartag.pipeline.fixes.find_fixes`).

The rule here is the serving one, made stricter because a dataset label is trained on: the
type carries; the color carries only when the model answered the new bytes (a cached
image with the same SHA-256, e.g. from the scraper's own later request) the same color as
the stored image. A copy the model never answered loses its color label rather than risk
a wrong one.
"""

from __future__ import annotations

from collections.abc import Mapping

from sqlalchemy.orm import Session

from cartag.store import images as image_repo
from cartag.vocab import read_stored_color


def recolored_copies(session: Session, copies: Mapping[str, str]) -> set[str]:
    """Stored images whose copy keeps its type label but not its color label.

    Args:
        session: A read session.
        copies: Stored image key -> SHA-256 of the bytes its URL serves now, for each
            image whose download is another file of the same picture (pHash match).

    Returns:
        The keys whose color does not carry: the model answered the copy's bytes another
        color than the stored image, or never answered them, or answered the stored
        image without a color. One read of each side, none when ``copies`` is empty.
    """
    if not copies:
        return set()
    stored = image_repo.get_images(session, copies.keys())
    served = image_repo.get_images_by_sha(session, set(copies.values()))
    out: set[str] = set()
    for key, sha in copies.items():
        old, new = stored.get(key), served.get(sha)
        before = read_stored_color(old.color) if old is not None else None
        after = read_stored_color(new.color) if new is not None else None
        if before is None or after != before:
            out.add(key)
    return out
