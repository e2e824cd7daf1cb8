"""Repository functions for the image cache: images and the URLs that point at them."""

from __future__ import annotations

import datetime as dt
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from cartag.store.cache import UrlLookup
from cartag.store.tables import ImageRow, UrlRow
from cartag.store.upsert import chunked, in_values, upsert


@dataclass(frozen=True)
class NewImage:
    """What the pipeline learned about an image it has just classified."""

    image_key: str
    url: str
    content_sha256: str | None
    phash: str | None
    width: int | None
    height: int | None
    byte_size: int | None
    image_type: str | None
    color: str | None
    type_scores: dict[str, float] | None
    color_scores: dict[str, float] | None
    confidence: float | None
    model_version: str | None
    color_reason: str | None = None
    novelty: float | None = None


def get_images(session: Session, keys: Collection[str]) -> dict[str, ImageRow]:
    """Images by key; keys not in the cache are absent from the result."""
    found: dict[str, ImageRow] = {}
    for chunk in chunked(set(keys)):
        for row in session.scalars(select(ImageRow).where(ImageRow.image_key.in_(chunk))):
            found[row.image_key] = row
    return found


def any_image(session: Session, keys: Collection[str], shas: Collection[str]) -> bool:
    """Whether any image is cached under one of ``keys`` or with one of ``shas``'s bytes."""
    for column, values in ((ImageRow.image_key, keys), (ImageRow.content_sha256, shas)):
        for chunk in chunked(set(values)):
            stmt = select(ImageRow.image_key).where(column.in_(chunk)).limit(1)
            if session.scalar(stmt) is not None:
                return True
    return False


def get_images_by_sha(session: Session, shas: Collection[str]) -> dict[str, ImageRow]:
    """One cached image per content SHA-256 (the same bytes under another URL/key)."""
    found: dict[str, ImageRow] = {}
    for chunk in chunked(set(shas)):
        stmt = select(ImageRow).where(ImageRow.content_sha256.in_(chunk))
        for row in session.scalars(stmt):
            if row.content_sha256 is not None:
                found.setdefault(row.content_sha256, row)
    return found


_LOOKUP_COLUMNS = (
    UrlRow.url,
    UrlRow.image_key,
    UrlRow.etag,
    UrlRow.last_modified,
    UrlRow.content_length,
    UrlRow.checked_at,
    ImageRow.url,
    ImageRow.content_sha256,
    ImageRow.phash,
    ImageRow.image_type,
    ImageRow.color,
    ImageRow.confidence,
    ImageRow.model_version,
    ImageRow.color_reason,
    ImageRow.novelty,
)


def lookup_urls(session: Session, urls: Collection[str]) -> list[UrlLookup]:
    """Known URLs with their validators and their image's stored answer.

    One joined query per chunk of URLs, returning plain tuples: the cached path of
    classify reads a whole inventory here, and ORM objects cost several times more.
    """
    found: list[UrlLookup] = []
    for chunk in chunked(set(urls)):
        stmt = (
            select(*_LOOKUP_COLUMNS)
            .join(ImageRow, ImageRow.image_key == UrlRow.image_key)
            .where(in_values(session, UrlRow.url, chunk))
        )
        for url, key, etag, modified, length, checked, *answer in session.execute(stmt):
            image_url, sha, ph, image_type, color, confidence, version, reason, novelty = answer
            found.append(
                UrlLookup(
                    url,
                    key,
                    etag,
                    modified,
                    length,
                    checked.timestamp(),
                    image_url,
                    sha,
                    ph,
                    image_type,
                    color,
                    confidence,
                    version,
                    reason,
                    novelty,
                )
            )
    return found


def get_urls(session: Session, urls: Collection[str]) -> dict[str, UrlRow]:
    """Known URLs with their last validators."""
    found: dict[str, UrlRow] = {}
    for chunk in chunked(set(urls)):
        for row in session.scalars(select(UrlRow).where(UrlRow.url.in_(chunk))):
            found[row.url] = row
    return found


def save_images(session: Session, images: Sequence[NewImage], now: dt.datetime) -> None:
    """Insert or refresh the cached answers for image keys (safe under concurrency)."""
    rows = [
        {
            "image_key": image.image_key,
            "url": image.url,
            "content_sha256": image.content_sha256,
            "phash": image.phash,
            "width": image.width,
            "height": image.height,
            "byte_size": image.byte_size,
            "image_type": image.image_type,
            "color": image.color,
            "type_scores": image.type_scores,
            "color_scores": image.color_scores,
            "confidence": image.confidence,
            "model_version": image.model_version,
            "color_reason": image.color_reason,
            "novelty": image.novelty,
            "created_at": now,
            "updated_at": now,
        }
        for image in images
    ]
    if rows:
        update = [c for c in rows[0] if c not in ("image_key", "created_at")]
        upsert(session, ImageRow, rows, index_elements=["image_key"], update=update)


def save_image(session: Session, image: NewImage, now: dt.datetime) -> None:
    """:func:`save_images` for one image."""
    save_images(session, [image], now)


@dataclass(frozen=True)
class UrlEntry:
    """Which image a URL served last, with the validators to revalidate it."""

    url: str
    image_key: str
    etag: str | None
    last_modified: str | None
    content_length: int | None


def save_urls(session: Session, entries: Sequence[UrlEntry], now: dt.datetime) -> None:
    """Remember the image and validators of each URL."""
    rows = [
        {
            "url": e.url,
            "image_key": e.image_key,
            "etag": e.etag,
            "last_modified": e.last_modified,
            "content_length": e.content_length,
            "checked_at": now,
        }
        for e in entries
    ]
    upsert(session, UrlRow, rows, index_elements=["url"])


def touch_urls(session: Session, urls: Collection[str], now: dt.datetime) -> None:
    """Record that these URLs were revalidated (304) just now.

    A re-run's whole inventory at once: one statement per 500 URLs, with the URLs as
    one array parameter on PostgreSQL (:func:`~cartag.store.upsert.in_values`). The rows
    are locked in key order, as every writer of ``urls`` takes them (see
    :func:`~cartag.store.upsert.upsert`).
    """
    for chunk in chunked(sorted(set(urls))):
        # A plain UPDATE locks rows in its scan's order (a sequential scan: the table's
        # physical order), and a store of new answers writing some of these URLs in key
        # order meanwhile could hold one this waits for while waiting for one this holds.
        locked = (
            select(UrlRow.url)
            .where(in_values(session, UrlRow.url, chunk))
            .order_by(UrlRow.url)
            .with_for_update()
        )
        stmt = update(UrlRow).where(UrlRow.url.in_(locked)).values(checked_at=now)
        # No objects of this fresh session to keep in step with the rows.
        session.execute(stmt.execution_options(synchronize_session=False))


def update_model_fields(
    session: Session, values: Sequence[Mapping[str, Any]], *, chunk: int = 500
) -> None:
    """Overwrite model answers by image key (ORM bulk UPDATE by primary key).

    Each mapping holds ``image_key`` and only the model's columns to change; manual
    fixes live in their own table and are never touched. Rows are updated in key order,
    as every writer of images locks them (:func:`cartag.store.upsert.upsert`).
    """
    ordered = sorted(values, key=lambda row: str(row["image_key"]))
    for part in chunked(ordered, chunk):
        session.execute(update(ImageRow), part)
