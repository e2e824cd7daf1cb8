"""What a classify call learns about each URL, and how it stores the new answers.

Known URLs are looked up (:func:`lookup_urls`), downloads matched with stored images
by key or by bytes (:func:`match_known`). A URL ends up :class:`Cached` (a stored
answer, ``fresh`` when the model ran for it in this call), :class:`New` (downloaded,
to be classified) or :class:`Skip`. New answers are stored with their URLs and
embeddings in one transaction (:func:`store_new`); the embeddings and color features
of a model's predictions are cached by content for retraining and re-classifying
(:func:`save_vectors`, also used after a promotion by :mod:`cartag.jobs.reclassify`).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from PIL import Image
from sqlalchemy.orm import Session

from cartag.clock import Clock
from cartag.imaging.keys import content_key
from cartag.models.classifier import Classifier, Prediction
from cartag.models.color_providers import ColorAnswer
from cartag.net.outcomes import Fetched
from cartag.pipeline.bookkeeping import bookkeeping_failed
from cartag.redaction import strip_password
from cartag.store import embeddings as embedding_repo
from cartag.store import images as image_repo
from cartag.store.cache import LookupCache, UrlLookup
from cartag.store.db import Database
from cartag.store.health import storage_problem
from cartag.store.tables import ImageRow
from cartag.telemetry import Telemetry
from cartag.vocab import read_stored_color


@dataclass
class Cached:
    """A URL answered by a stored image; ``fresh`` when the model ran for it just now.

    ``image`` is the stored row, or for a known URL its lookup (the answer fields only).
    """

    image: ImageRow | UrlLookup
    fresh: bool = False


@dataclass
class New:
    """A downloaded image the model has to classify."""

    fetched: Fetched
    key: str
    sha256: str
    image: Image.Image | None = None
    # The image as the model sees it (Classifier.prepare); the pHash is taken of it.
    model_image: Image.Image | None = None
    width: int | None = None
    height: int | None = None
    phash: str | None = None


@dataclass
class Skip:
    """A URL that gets a skipped result, and why."""

    reason: str


Outcome = Cached | New | Skip


def save_vectors(
    session: Session,
    classifier: Classifier,
    predictions: Iterable[tuple[str, Prediction]],
    now: dt.datetime,
) -> None:
    """Cache the embeddings (and color features) of ``classifier``'s predictions by content.

    Args:
        session: A write session.
        classifier: The model that made the predictions: its backbone id (and color
            features id) name the vectors.
        predictions: ``(content SHA-256, prediction)`` pairs.
        now: Stored as the rows' creation time.
    """
    pairs = list(predictions)
    if classifier.backbone_id is not None:
        vectors = {sha: p.embedding for sha, p in pairs if p.embedding is not None}
        embedding_repo.save_embeddings(session, classifier.backbone_id, vectors, now)
    features_id = getattr(classifier, "color_features", None)
    if isinstance(features_id, str):
        extra = {sha: p.color_features for sha, p in pairs if p.color_features is not None}
        embedding_repo.save_embeddings(session, features_id, extra, now)


def url_entry(item: New) -> image_repo.UrlEntry:
    """The stored URL of a downloaded image, with its validators."""
    v = item.fetched.validators
    # Stored without the URL's password: it is needed for the download only.
    return image_repo.UrlEntry(
        strip_password(item.fetched.url), item.key, v.etag, v.last_modified, v.content_length
    )


def copy_answer(session: Session, source: ImageRow, item: New, now: dt.datetime) -> ImageRow:
    """Store the answer of ``source`` (same bytes) under the new key of ``item``."""
    image_repo.save_image(
        session,
        image_repo.NewImage(
            image_key=item.key,
            url=strip_password(item.fetched.url),
            content_sha256=item.sha256,
            phash=source.phash,
            width=source.width,
            height=source.height,
            byte_size=len(item.fetched.content),
            image_type=source.image_type,
            color=read_stored_color(source.color),
            type_scores=source.type_scores,
            color_scores=source.color_scores,
            confidence=source.confidence,
            model_version=source.model_version,
            color_reason=source.color_reason,
            novelty=source.novelty,
        ),
        now,
    )
    return image_repo.get_images(session, [item.key])[item.key]


def _new_image(
    item: New, prediction: Prediction, answer: ColorAnswer, version: str
) -> image_repo.NewImage:
    return image_repo.NewImage(
        image_key=item.key,
        url=strip_password(item.fetched.url),
        content_sha256=item.sha256,
        phash=item.phash,
        width=item.width,
        height=item.height,
        byte_size=len(item.fetched.content),
        image_type=prediction.image_type,
        color=answer.color,
        type_scores=prediction.type_scores,
        color_scores=answer.scores,
        confidence=prediction.confidence,
        model_version=prediction.model_version or version,
        color_reason=answer.reason,
        novelty=prediction.novelty,
    )


def store_new(
    db: Database,
    lookup_cache: LookupCache,
    classifier: Classifier,
    ready: list[New],
    predictions: Sequence[Prediction],
    answers: Sequence[ColorAnswer],
    now: dt.datetime,
) -> dict[str, ImageRow]:
    """Store new answers, URLs and embeddings in one transaction (in a worker thread).

    Embeddings are cached for the predictions of ``classifier``, the model served now,
    only: across a hot-swap to another backbone, an old batch's vectors must not be
    stored under the new backbone's id.

    Returns:
        The stored row of each image key.
    """
    triples = list(zip(ready, predictions, answers, strict=True))
    with db.write() as session:
        image_repo.save_images(
            session,
            [_new_image(item, p, a, classifier.version) for item, p, a in triples],
            now,
        )
        image_repo.save_urls(session, [url_entry(item) for item in ready], now)
        current = [
            (item.sha256, p)
            for item, p, _ in triples
            if p.model_version in (None, classifier.version)
        ]
        save_vectors(session, classifier, current, now)
        saved = image_repo.get_images(session, {item.key for item in ready})
    # Only once committed: a lookup by another request before the commit reads the old
    # rows, and would put them back in the cache after an earlier invalidation.
    lookup_cache.invalidate(
        [strip_password(item.fetched.url) for item in ready], [item.key for item in ready]
    )
    return saved


def lookup_urls(db: Database, lookup_cache: LookupCache, urls: list[str]) -> dict[str, UrlLookup]:
    """Known URLs with their image's answer: from the lookup cache, else the database.

    Returns them by the URL as fetched; they are stored (and cached) without the
    URL's password (:func:`~cartag.redaction.strip_password`).
    """
    stored = {url: strip_password(url) for url in urls}
    keys = list(dict.fromkeys(stored.values()))
    found = lookup_cache.get_many(keys)
    missing = [key for key in keys if key not in found] if found else keys
    if missing:
        with db.read() as session:
            loaded = image_repo.lookup_urls(session, missing)
        lookup_cache.set_many(loaded)
        found.update((entry.url, entry) for entry in loaded)
    return {url: found[key] for url, key in stored.items() if key in found}


def _any_known(db: Database, new: list[New]) -> bool:
    """Whether any downloaded image is cached already, by key or by bytes (a read)."""
    with db.read() as session:
        return image_repo.any_image(session, [n.key for n in new], [n.sha256 for n in new])


def match_known(
    db: Database,
    lookup_cache: LookupCache,
    telemetry: Telemetry,
    new: list[New],
    revalidated: list[str],
    clock: Clock,
) -> dict[str, ImageRow]:
    """Find downloaded images already cached by key or by bytes; record 304s.

    The downloads' copies and URLs are written in one transaction, images then URLs (the
    tables' order, see :func:`cartag.store.upsert.upsert`); the 304s, if any, in their
    own afterwards. In the downloads' transaction they would be URL rows written out of
    that order: held while the copies wait for an image that a store of new answers
    holds, which in turn waits for one of those URLs (a deadlock on PostgreSQL, a 503).

    Returns the cached row of each such image's key.
    """
    now = clock.now()
    found: dict[str, ImageRow] = {}
    # A first run's downloads are new images: no write transaction. This runs on the
    # event loop, and a write would wait there for the store's lock while another
    # chunk's answers are being saved, stalling every download meanwhile.
    if new and _any_known(db, new):
        found = _copy_known(db, lookup_cache, new, now)
    if revalidated:
        _record_revalidated(db, telemetry, revalidated, now)
    return found


def _copy_known(
    db: Database, lookup_cache: LookupCache, new: list[New], now: dt.datetime
) -> dict[str, ImageRow]:
    """Store the downloads of cached images under their keys and URLs (one transaction)."""
    known: list[New] = []
    with db.write() as session:
        by_key = image_repo.get_images(session, {n.key for n in new})
        rekeyed = _rekey_other_bytes(new, by_key)
        if rekeyed:
            by_key.update(image_repo.get_images(session, rekeyed))
        by_sha = image_repo.get_images_by_sha(
            session, {n.sha256 for n in new if n.key not in by_key}
        )
        # In key order, as every writer of images (see cartag.store.upsert.upsert).
        for item in sorted(new, key=lambda n: n.key):
            cached = by_key.get(item.key)
            if cached is None and item.sha256 in by_sha:
                # The same bytes are cached under another key: reuse that answer.
                by_key[item.key] = copy_answer(session, by_sha[item.sha256], item, now)
            if item.key in by_key:
                known.append(item)
        image_repo.save_urls(session, [url_entry(item) for item in known], now)
    # These URLs may serve another image now.
    lookup_cache.invalidate([strip_password(item.fetched.url) for item in known])
    return {item.key: by_key[item.key] for item in known}


def _rekey_other_bytes(new: list[New], by_key: dict[str, ImageRow]) -> set[str]:
    """Key by content the downloads whose validators name an image with other bytes.

    A server that reuses an ETag / Last-Modified (and length) for a replaced photo, and
    sends the new bytes anyway, gives them the old image's validators key. The bytes'
    hash is already known, so such a download is keyed by it instead and answered as
    its own image, never with the old one's answer.

    Returns:
        The content keys given.
    """
    rekeyed = set()
    for item in new:
        cached = by_key.get(item.key)
        if cached is not None and cached.content_sha256 not in (None, item.sha256):
            item.key = content_key(item.sha256)
            rekeyed.add(item.key)
    return rekeyed


def _record_revalidated(
    db: Database, telemetry: Telemetry, revalidated: list[str], now: dt.datetime
) -> None:
    """Record when the 304s' URLs were revalidated (bookkeeping: a full store is logged)."""
    try:
        with db.write() as session:
            image_repo.touch_urls(session, [strip_password(url) for url in revalidated], now)
    except Exception as exc:
        if storage_problem(exc) is None:
            raise
        # The cached answers are still right. When they were revalidated is
        # bookkeeping, and a full or read-only store must not fail them.
        bookkeeping_failed(telemetry, "revalidation", exc)
