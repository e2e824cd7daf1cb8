"""Thumbnails of classified images for the fix page, made lazily and kept in the blob store.

Classify keeps no pixels (and must not spend time on thumbnails), so a thumbnail is made
the first time a page asks for it: the image is downloaded again from its stored URL
with the same guarded :class:`~cartag.net.fetch.Fetcher` (address guard, size and time
limits), checked to be the very bytes that were classified, decoded with the same
bounded decoder and written as a small JPEG to the blob store under a name derived from
the image's content (:func:`cartag.store.blobs.derived_path`). Later requests, from any
server sharing the blob store, read it from there.

No preview can be made of an image whose URL needed a password (cartag never stores
one), whose server no longer serves it, or whose URL now serves other bytes: those are
:class:`~cartag.errors.NotFoundError` / :class:`~cartag.errors.ConflictError` with the
reason, and the page shows the reason instead of a picture.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
from dataclasses import dataclass
from typing import Final

from cartag.errors import ConflictError, DecodeError, NotFoundError
from cartag.imaging.decode import decode_image
from cartag.net.fetch import Fetcher
from cartag.net.outcomes import Fetched, FetchRequest
from cartag.redaction import has_password
from cartag.store.blobs import BlobStore, derived_path

# Shorter side >= THUMB_SIZE, longer side <= 2 * THUMB_SIZE (as the review page's).
THUMB_SIZE: Final[int] = 128
_QUALITY: Final[int] = 82
# Why a thumbnail cannot be made of an image whose URL had a password.
PASSWORD_REASON: Final[str] = "url_password"


@dataclass(frozen=True)
class ThumbnailSource:
    """What a thumbnail is made from: a stored image's key, URL and content hash."""

    image_key: str
    url: str
    content_sha256: str | None


def unavailable_reason(source: ThumbnailSource) -> str | None:
    """Why no thumbnail can ever be made of ``source`` (None: one can be tried)."""
    return PASSWORD_REASON if has_password(source.url) else None


def thumbnail_name(source: ThumbnailSource) -> str:
    """The derivation a thumbnail's blob is named after (its content, else its key)."""
    if source.content_sha256:
        return f"thumbnail-{THUMB_SIZE}:sha256:{source.content_sha256}"
    return f"thumbnail-{THUMB_SIZE}:key:{source.image_key}"


def make_thumbnail(data: bytes, *, max_pixels: int, max_decode_bytes: int) -> bytes:
    """A JPEG of ``data``: shorter side >= 128 px, longer side <= 256 px.

    Raises:
        DecodeError: ``data`` is not a usable image.
    """
    decoded = decode_image(
        data, max_pixels=max_pixels, target_size=THUMB_SIZE, max_decode_bytes=max_decode_bytes
    )
    buffer = io.BytesIO()
    decoded.image.save(buffer, "JPEG", quality=_QUALITY)
    return buffer.getvalue()


async def thumbnail(
    source: ThumbnailSource,
    fetcher: Fetcher,
    blobs: BlobStore,
    *,
    max_pixels: int,
    max_decode_bytes: int,
) -> bytes:
    """The thumbnail of a stored image: from the blob store, else made now and stored.

    Args:
        source: The image.
        fetcher: Downloads it (the guarded fetcher classify uses).
        blobs: Where thumbnails are kept.
        max_pixels: ``CARTAG_MAX_IMAGE_PIXELS``.
        max_decode_bytes: ``CARTAG_MAX_DECODE_MB`` in bytes.

    Returns:
        The JPEG's bytes.

    Raises:
        NotFoundError: No preview can be made: the URL needed a password, the download
            failed (the reason is in the message) or the bytes do not decode.
        ConflictError: The URL serves other bytes than those classified.
    """
    name = thumbnail_name(source)
    cached = await asyncio.to_thread(blobs.find, derived_path(name, "jpg"))
    if cached is not None:
        return cached
    if unavailable_reason(source) == PASSWORD_REASON:
        raise NotFoundError(
            f"image {source.image_key!r} has no preview: its URL needed a password, which "
            "cartag does not keep (the image can still be fixed)"
        )
    [outcome] = await fetcher.fetch_many([FetchRequest(source.url)])
    if not isinstance(outcome, Fetched):
        reason = getattr(outcome, "reason", "not_modified")
        raise NotFoundError(
            f"image {source.image_key!r} has no preview: downloading it again failed "
            f"({reason}); the image can still be fixed"
        )
    if source.content_sha256 and hashlib.sha256(outcome.content).hexdigest() != (
        source.content_sha256
    ):
        raise ConflictError(
            f"the URL of image {source.image_key!r} now serves another image: classify the "
            "URL again to see (and fix) what it shows now"
        )
    try:
        data = await asyncio.to_thread(
            make_thumbnail,
            outcome.content,
            max_pixels=max_pixels,
            max_decode_bytes=max_decode_bytes,
        )
    except DecodeError as exc:
        raise NotFoundError(
            f"image {source.image_key!r} has no preview ({exc.reason}): {exc.message}"
        ) from exc
    await asyncio.to_thread(blobs.put_derived, name, data, "jpg")
    return data


def keep_thumbnail(
    source: ThumbnailSource,
    data: bytes,
    blobs: BlobStore,
    *,
    max_pixels: int,
    max_decode_bytes: int,
) -> bool:
    """Make and keep the thumbnail of an image whose bytes are at hand (local files).

    The fix page cannot download a local file again, so ``cartag classify-files``
    keeps the thumbnails of what it classified.

    Returns:
        False if ``data`` does not decode (no thumbnail is kept).
    """
    try:
        thumb = make_thumbnail(data, max_pixels=max_pixels, max_decode_bytes=max_decode_bytes)
    except DecodeError:
        return False
    blobs.put_derived(thumbnail_name(source), thumb, "jpg")
    return True
