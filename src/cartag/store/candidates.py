"""SQL of dataset candidates: stored images a dataset build may propose for review.

Two pools, both limited to images with a model answer and **no fix** (any scope: a
fixed image is added with its fix's labels by ``--add-fixes-since``, never as a model
proposal), and seen in an advertiser's request (``advertiser_images.last_seen_at``) since
a cutoff:

* :func:`unfixed_images_of` — one advertiser's images, lowest model confidence first;
* :func:`far_images` — everyone's images whose ``novelty`` exceeds a threshold, farthest
  first.

The jump rule that picks the advertisers reads the monitor's own queries
(:mod:`cartag.store.monitoring`); :mod:`cartag.training.datasets.candidates` applies it.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Collection
from dataclasses import dataclass

from sqlalchemy import ColumnElement, exists, select
from sqlalchemy.orm import Session

from cartag.store.tables import AdvertiserImageRow, FixRow, ImageRow, UrlRow
from cartag.store.upsert import chunked
from cartag.vocab import read_stored_color


@dataclass(frozen=True)
class StoredImage:
    """A stored image as a candidate: the model's answer and where to download it.

    Attributes:
        image_key: The image.
        urls: Its own URL first, then other URLs last seen serving it.
        content_sha256: SHA-256 of the classified bytes (None if unknown).
        phash: pHash of the classified image (None if unknown).
        image_type: The model's type answer.
        color: The model's color answer (None for a Placeholder or none given).
        confidence: The model's confidence in its answer (None if unknown).
        novelty: Distance to the training data (None if unknown).
        model_version: The model that answered.
        advertiser_id: The advertiser whose request named it most recently in the window.
        seen_at: When that request was.
    """

    image_key: str
    urls: list[str]
    content_sha256: str | None
    phash: str | None
    image_type: str
    color: str | None
    confidence: float | None
    novelty: float | None
    model_version: str | None
    advertiser_id: str
    seen_at: dt.datetime


def _answered_unfixed() -> list[ColumnElement[bool]]:
    return [
        ImageRow.image_type.is_not(None),
        ImageRow.model_version.is_not(None),
        ~exists().where(FixRow.image_key == ImageRow.image_key),
    ]


def _seen_since(since: dt.datetime, advertiser_id: str | None = None) -> ColumnElement[bool]:
    seen = [
        AdvertiserImageRow.image_key == ImageRow.image_key,
        AdvertiserImageRow.last_seen_at >= since,
    ]
    if advertiser_id is not None:
        seen.append(AdvertiserImageRow.advertiser_id == advertiser_id)
    return exists().where(*seen)


def unfixed_images_of(
    session: Session, advertiser_id: str, since: dt.datetime, *, limit: int, offset: int = 0
) -> list[StoredImage]:
    """An advertiser's model-answered, unfixed images seen since ``since``.

    Ordered by the model's confidence, lowest first (unknown last), then by key, so
    ``offset`` pages through the same order.
    """
    rows = list(
        session.scalars(
            select(ImageRow)
            .where(*_answered_unfixed(), _seen_since(since, advertiser_id))
            .order_by(ImageRow.confidence.is_(None), ImageRow.confidence, ImageRow.image_key)
            .offset(offset)
            .limit(limit)
        )
    )
    return _with_sightings(session, rows, since, advertiser_id)


def far_images(
    session: Session, since: dt.datetime, threshold: float, *, limit: int, offset: int = 0
) -> list[StoredImage]:
    """Model-answered, unfixed images seen since ``since`` with ``novelty > threshold``.

    Ordered by novelty, farthest first, then by key.
    """
    rows = list(
        session.scalars(
            select(ImageRow)
            .where(*_answered_unfixed(), ImageRow.novelty > threshold, _seen_since(since))
            .order_by(ImageRow.novelty.desc(), ImageRow.image_key)
            .offset(offset)
            .limit(limit)
        )
    )
    return _with_sightings(session, rows, since, None)


def _with_sightings(
    session: Session, rows: list[ImageRow], since: dt.datetime, advertiser_id: str | None
) -> list[StoredImage]:
    keys = [row.image_key for row in rows]
    latest: dict[str, tuple[dt.datetime, str]] = {}
    query = select(
        AdvertiserImageRow.image_key,
        AdvertiserImageRow.advertiser_id,
        AdvertiserImageRow.last_seen_at,
    ).where(AdvertiserImageRow.last_seen_at >= since)
    if advertiser_id is not None:
        query = query.where(AdvertiserImageRow.advertiser_id == advertiser_id)
    for chunk in chunked(keys):
        for key, adv, seen in session.execute(query.where(AdvertiserImageRow.image_key.in_(chunk))):
            # The latest sighting wins; a tie goes to the smaller advertiser id (stable).
            best = latest.get(key)
            if best is None or seen > best[0] or (seen == best[0] and adv < best[1]):
                latest[key] = (seen, adv)
    urls = urls_of(session, keys)
    return [
        StoredImage(
            image_key=row.image_key,
            urls=urls.get(row.image_key, []),
            content_sha256=row.content_sha256,
            phash=row.phash,
            image_type=str(row.image_type),
            color=None if row.image_type == "Placeholder" else read_stored_color(row.color),
            confidence=row.confidence,
            novelty=row.novelty,
            model_version=row.model_version,
            advertiser_id=latest[row.image_key][1],
            seen_at=latest[row.image_key][0],
        )
        for row in rows
    ]


def urls_of(session: Session, keys: Collection[str]) -> dict[str, list[str]]:
    """Where each image can be downloaded: its own URL, then URLs last seen serving it."""
    found: dict[str, list[str]] = {}
    for chunk in chunked(sorted(set(keys))):
        for key, url in session.execute(
            select(ImageRow.image_key, ImageRow.url).where(ImageRow.image_key.in_(chunk))
        ):
            if url:
                found.setdefault(key, []).append(url)
        for key, url in session.execute(
            select(UrlRow.image_key, UrlRow.url)
            .where(UrlRow.image_key.in_(chunk))
            .order_by(UrlRow.checked_at.desc())
        ):
            found.setdefault(key, []).append(url)
    return {key: list(dict.fromkeys(urls)) for key, urls in found.items()}
