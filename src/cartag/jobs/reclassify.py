"""Re-classification after a promotion: new model answers for opted-in advertisers' images.

Only advertisers that opted in (``cartag advertisers set ID --reclassify-on-promote``)
are re-classified. An image's new answer is computed from its cached backbone
embedding (and cached color features) when the new model has the same backbone, so
no image is downloaded; otherwise the image is downloaded again through the
:class:`~cartag.net.fetch.Fetcher` and run through the whole model, if its URL still
serves the bytes that were classified.

Only the model's fields of ``images`` rows change (type, scores, confidence, model
version; the color too when the built-in model names colors). Manual fixes live in
``fixes`` and are never touched: they still win when an answer is resolved.

Every run is recorded before it starts (:func:`record_request`, a row of
:mod:`cartag.store.reclassify_requests`) and closed when it finishes: a run cut off
part-way — the server stopped, Ctrl-C — stays open, which ``/healthz`` and ``cartag models
list`` report while its model is production. A run beats while it goes; one silent for
``CARTAG_JOB_LEASE_S`` is taken over by a server of production (:func:`resume_stale`), and
any run over the same advertisers (``cartag models reclassify``) closes it too; images
already re-classified are skipped.

Only the ``production`` model's answers are ever written: each chunk's write reads the
alias, share-locked, in its own transaction, and a run whose model is no longer
production (a promotion or rollback came meanwhile, whose own re-classification takes
over) stops with :class:`ReclassifySupersededError` without writing. Two runs at once —
an API promotion and a CLI one, a promotion then a quick rollback — used to finish in
either order, and the slower one left a model no longer in production in the answers.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from functools import partial
from typing import Any

import numpy as np

from cartag.clock import Clock
from cartag.deploy.followup import RECLASSIFY_COMMAND, advertisers_to_run
from cartag.errors import CartagError, ConflictError
from cartag.imaging.decode import decode_image
from cartag.imaging.keys import content_sha256
from cartag.jobs.beats import beating
from cartag.models.classifier import Classifier, EmbeddingClassifier, Prediction, make_prediction
from cartag.net.fetch import Fetcher
from cartag.net.outcomes import Fetched, FetchRequest
from cartag.pipeline.outcomes import save_vectors
from cartag.settings import Settings
from cartag.store import advertisers as advertiser_repo
from cartag.store import embeddings as embedding_repo
from cartag.store import images as image_repo
from cartag.store import model_versions as version_repo
from cartag.store import reclassify_requests as request_repo
from cartag.store.cache import LookupCache, build_lookup_cache
from cartag.store.db import Database
from cartag.store.tables import ImageRow
from cartag.store.upsert import chunked

log = logging.getLogger(__name__)

# Images per store read / model step / store write.
_CHUNK = 500


class ReclassifySupersededError(ConflictError):
    """The model of a re-classification is no longer production (409); nothing more is saved.

    Attributes:
        version: The model the run re-classified with.
        production: The version production names now (None: the alias is not set).
        saved: Images the run had saved before it stopped (while its model was production).
    """

    code = "reclassify_superseded"

    def __init__(self, version: str, production: str | None, saved: int) -> None:
        now = f"production is now {production}" if production else "production is not set"
        super().__init__(
            f"re-classification with {version} stopped after {saved} image(s): {now} (a "
            "promotion or rollback came meanwhile), and only the production model's answers "
            "are saved; the re-classification that follows that deployment gives the images "
            f"its answers, or run `{RECLASSIFY_COMMAND}`"
        )
        self.version = version
        self.production = production
        self.saved = saved


@dataclass
class ReclassifyReport:
    """What one run did.

    Attributes:
        advertisers: The opted-in advertisers covered.
        images: Distinct images of theirs found in the cache.
        current: Already answered by this model version (left alone).
        from_cache: Re-classified from cached embeddings, without a download.
        downloaded: Re-classified after downloading the image again.
        failed: Could not be downloaded or decoded, or their URL now serves other bytes;
            their old answer stays.
        changed: Re-classified images whose type or color changed.
        saved: Images whose new answer was written.
        request_id: The re-classification request the run carried out.
    """

    model_version: str
    advertisers: list[str] = field(default_factory=list)
    images: int = 0
    current: int = 0
    from_cache: int = 0
    downloaded: int = 0
    failed: int = 0
    changed: int = 0
    saved: int = 0
    request_id: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def record_request(
    db: Database, version: str, advertiser_id: str | None, *, by: str, clock: Clock
) -> int:
    """Record a re-classification with ``version`` as asked for, before it runs.

    Written first, so that a run cut off before it finishes (the process stopped) leaves
    it open (see the module docstring).

    Args:
        db: The store.
        version: The model to re-classify with: it must be production.
        advertiser_id: One advertiser; None for every one that opted in.
        by: Who asks (a key's name, a user).
        clock: Time source.

    Returns:
        The request's id, for :func:`reclassify`.

    Raises:
        ReclassifySupersededError: ``version`` is not the production model (nothing is
            recorded: the open requests of production's model stay).
    """
    with db.write() as session:
        production = version_repo.alias_version_locked(session, version_repo.PRODUCTION)
        if production != version:
            raise ReclassifySupersededError(version, production, 0)
        return request_repo.open_request(session, version, advertiser_id, by=by, now=clock.now()).id


async def reclassify(
    db: Database,
    settings: Settings,
    classifier: Classifier,
    fetcher: Fetcher,
    clock: Clock,
    *,
    advertiser_id: str | None = None,
    lookup_cache: LookupCache | None = None,
    request_id: int | None = None,
    requested_by: str = "cartag",
) -> ReclassifyReport:
    """Recompute the model answer of the images of opted-in advertisers with ``classifier``.

    Args:
        db: The store.
        settings: ``color_provider`` (colors are recomputed only for ``builtin``) and
            ``max_image_pixels``.
        classifier: The newly promoted model.
        fetcher: Downloads images whose embeddings are not cached.
        clock: Time source for ``updated_at``.
        advertiser_id: One advertiser (must have opted in); None = all that opted in.
        lookup_cache: Read-through cache of classify lookups to invalidate for every
            updated image; default: the one the settings configure (Redis or none).
        request_id: The request this run carries out (:func:`record_request`); None:
            one is recorded here, as asked for by ``requested_by``.
        requested_by: Who asks, when the request is recorded here.

    Returns:
        Counts of what was done.

    Raises:
        ConflictError: ``advertiser_id`` has not opted in.
        ReclassifySupersededError: ``classifier`` is not (or no longer) the production
            model; the images saved before keep its answers until production's run.
    """
    report = ReclassifyReport(classifier.version)
    report.advertisers = advertisers_to_run(db, advertiser_id)
    if request_id is None:
        # Checks that the model is production too, before any download; each write
        # checks again under the lock (_save).
        request_id = await asyncio.to_thread(
            record_request, db, classifier.version, advertiser_id, by=requested_by, clock=clock
        )
    report.request_id = request_id
    keys: set[str] = set()
    cache = lookup_cache or build_lookup_cache(settings)
    # A chunk's downloads can outlast the lease: the beats tell other servers the run is
    # alive, so none takes the request over (resume_stale) while it runs.
    beat = partial(_touch, db, request_id, clock)
    try:
        async with beating(beat, settings.job_lease_s / 4, f"re-classification {request_id}"):
            with db.read() as session:
                production = version_repo.alias_version(session, version_repo.PRODUCTION)
                if production != classifier.version:
                    raise ReclassifySupersededError(classifier.version, production, 0)
                for advertiser in report.advertisers:
                    keys |= advertiser_repo.advertiser_image_keys(session, advertiser)
            for chunk in chunked(sorted(keys), _CHUNK):
                await _run_chunk(db, settings, classifier, fetcher, clock, chunk, report, cache)
    except ReclassifySupersededError:
        await asyncio.to_thread(_close, db, report, request_repo.SUPERSEDED, clock, advertiser_id)
        raise
    except Exception as exc:
        # The request stays open (reported as incomplete), with what stopped it. A
        # cancellation (the server stopping) is no Exception: it leaves it open as well.
        await asyncio.to_thread(_note_error, db, request_id, exc)
        raise
    finally:
        if lookup_cache is None:
            cache.close()
    await asyncio.to_thread(_close, db, report, request_repo.DONE, clock, advertiser_id)
    log.info("re-classification with %s: %s", classifier.version, report.to_dict())
    return report


def _close(
    db: Database, report: ReclassifyReport, outcome: str, clock: Clock, advertiser_id: str | None
) -> None:
    """Close the run's request (``done`` closes those it covers too)."""
    if report.request_id is None:
        return
    with db.write() as session:
        request_repo.finish(
            session,
            report.request_id,
            outcome,
            now=clock.now(),
            version=report.model_version,
            advertiser_id=advertiser_id,
        )


def _touch(db: Database, request_id: int, clock: Clock) -> bool:
    with db.write() as session:
        return request_repo.beat(session, request_id, clock.now())


def claim_stale_request(
    db: Database, version: str, clock: Clock, lease_s: float
) -> tuple[int, str | None] | None:
    """Take over an open request of production's ``version`` whose run stopped.

    A run stopped when it neither saved a chunk nor beat for ``lease_s`` seconds (its
    process was stopped or killed part-way); see
    :func:`cartag.store.reclassify_requests.take_over`.

    Returns:
        ``(request id, advertiser id or None)`` of the request taken, or None.
    """
    now = clock.now()
    stale_before = now - dt.timedelta(seconds=lease_s)
    # Read first: every server asks every half lease, and nearly always nothing waits.
    with db.read() as session:
        row = request_repo.oldest_stopped(session, version, stale_before)
        if row is None:
            return None
        claimed = (row.id, row.advertiser_id)
    with db.write() as session:
        taken = request_repo.take_over(session, claimed[0], now=now, stale_before=stale_before)
    return claimed if taken else None


async def resume_stale(
    db: Database,
    settings: Settings,
    classifier: Classifier,
    fetcher: Fetcher,
    clock: Clock,
    *,
    lookup_cache: LookupCache | None = None,
) -> ReclassifyReport | None:
    """Finish one re-classification of ``classifier``'s model whose run stopped part-way.

    Servers call it now and then (``CARTAG_JOB_LEASE_S``): a request its own run left
    open — the server that ran it was stopped or killed — is taken over by one server
    that serves production's model, and run again from where it stopped (images already
    re-classified are skipped), so no opted-in advertiser keeps the previous model's
    answers waiting for someone to read ``/healthz``.

    Returns:
        The run's report, or None when no request waited.

    Raises:
        ReclassifySupersededError: Production moved on during the run.
    """
    claimed = await asyncio.to_thread(
        claim_stale_request, db, classifier.version, clock, settings.job_lease_s
    )
    if claimed is None:
        return None
    request_id, advertiser_id = claimed
    log.warning(
        "resuming re-classification request %s with %s (%s): its run stopped part-way",
        request_id,
        classifier.version,
        advertiser_id or "every opted-in advertiser",
    )
    try:
        await asyncio.to_thread(advertisers_to_run, db, advertiser_id)
    except ConflictError:
        # The advertiser stopped taking re-classifications: nothing is due any more.
        await asyncio.to_thread(_withdraw, db, request_id, clock)
        return None
    return await reclassify(
        db,
        settings,
        classifier,
        fetcher,
        clock,
        advertiser_id=advertiser_id,
        lookup_cache=lookup_cache,
        request_id=request_id,
    )


def _withdraw(db: Database, request_id: int, clock: Clock) -> None:
    with db.write() as session:
        request_repo.finish(
            session,
            request_id,
            request_repo.WITHDRAWN,
            now=clock.now(),
            version="",
            advertiser_id=None,
        )


def _note_error(db: Database, request_id: int, exc: Exception) -> None:
    problem = exc.message if isinstance(exc, CartagError) else repr(exc)
    try:
        with db.write() as session:
            request_repo.note_error(session, request_id, problem)
    except Exception:  # noqa: BLE001 - the run's own error is the one raised
        log.exception("could not record why re-classification request %s stopped", request_id)


async def _run_chunk(
    db: Database,
    settings: Settings,
    classifier: Classifier,
    fetcher: Fetcher,
    clock: Clock,
    keys: Sequence[str],
    report: ReclassifyReport,
    cache: LookupCache,
) -> None:
    with db.read() as session:
        rows = list(image_repo.get_images(session, keys).values())
    report.images += len(rows)
    todo = [row for row in rows if row.model_version != classifier.version]
    report.current += len(rows) - len(todo)
    if not todo:
        return
    predictions = await asyncio.to_thread(_from_cache, db, classifier, todo)
    report.from_cache += len(predictions)
    missing = [row for row in todo if row.image_key not in predictions]
    if missing:
        fresh = await _from_downloads(settings, classifier, fetcher, missing)
        report.downloaded += len(fresh)
        report.failed += len(missing) - len(fresh)
        predictions.update(fresh)
        shas = {row.image_key: row.content_sha256 for row in missing if row.content_sha256}
        await asyncio.to_thread(_cache_vectors, db, classifier, fresh, shas, clock)
    by_key = {row.image_key: row for row in todo}
    values = []
    for key, prediction in predictions.items():
        row = by_key[key]
        new = _model_fields(settings, prediction, classifier.version)
        if new["image_type"] != row.image_type or ("color" in new and new["color"] != row.color):
            report.changed += 1
        values.append({"image_key": key, **new, "updated_at": clock.now()})
    if values:
        await asyncio.to_thread(_save, db, classifier.version, values, report, clock)
        # Servers answering from the cache must see the new answers at once.
        cache.invalidate(image_keys=[v["image_key"] for v in values])


def _from_cache(
    db: Database, classifier: Classifier, rows: Sequence[ImageRow]
) -> dict[str, Prediction]:
    """Predictions from cached embeddings (+ color features) for the rows that have them."""
    if not isinstance(classifier, EmbeddingClassifier) or classifier.backbone_id is None:
        return {}
    shas = {row.content_sha256 for row in rows if row.content_sha256}
    with db.read() as session:
        vectors = embedding_repo.load_embeddings(session, classifier.backbone_id, shas)
        features: dict[str, np.ndarray] = {}
        if classifier.color_features:
            features = embedding_repo.load_embeddings(session, classifier.color_features, shas)
    usable = [
        row
        for row in rows
        if row.content_sha256 in vectors
        and (not classifier.color_features or row.content_sha256 in features)
        and vectors[row.content_sha256].shape[0] == classifier.type_head.embedding_dim
    ]
    if not usable:
        return {}
    emb = np.stack([vectors[str(row.content_sha256)] for row in usable])  # (N, D)
    color_in = emb
    if classifier.color_features:
        extra = np.stack([features[str(row.content_sha256)] for row in usable])  # (N, F)
        color_in = np.concatenate([emb, extra], axis=1)
    type_probs = classifier.type_head.predict_proba(emb)
    color_probs = classifier.color_head.predict_proba(color_in)
    novelty = classifier.novelty(emb)
    novelties = [None] * len(usable) if novelty is None else [float(n) for n in novelty]
    return {
        row.image_key: make_prediction(t, c, novelty=n)
        for row, t, c, n in zip(usable, type_probs, color_probs, novelties, strict=True)
    }


async def _from_downloads(
    settings: Settings, classifier: Classifier, fetcher: Fetcher, rows: Sequence[ImageRow]
) -> dict[str, Prediction]:
    """Download, decode and classify images whose embeddings are not cached.

    Only the bytes that were classified are used: an image whose URL now serves other
    bytes (the dealer replaced the photo) keeps its answer, so neither its row nor the
    embedding cache under its content hash takes another picture's answer. The bytes are
    decoded as a classify decodes them (the model's draft size), so a re-classified image
    gets the answer a first classify with this model would give.
    """
    fetched = await fetcher.fetch_many([FetchRequest(row.url) for row in rows])
    images = {}
    for row, outcome in zip(rows, fetched, strict=True):
        if not isinstance(outcome, Fetched):
            log.warning("re-classification: %s not downloaded (%r)", row.url, outcome)
            continue
        if row.content_sha256 and content_sha256(outcome.content) != row.content_sha256:
            log.warning(
                "re-classification: %s now serves other bytes than the image %s; its answer "
                "stays (classify the new image to answer it)",
                row.url,
                row.image_key,
            )
            continue
        try:
            images[row.image_key] = decode_image(
                outcome.content,
                max_pixels=settings.max_image_pixels,
                max_decode_bytes=settings.max_decode_mb * 1024 * 1024,
                draft_size=classifier.draft_size(),
            ).image
        except Exception as exc:  # noqa: BLE001 - one bad image never stops the run
            log.warning("re-classification: %s not decoded (%r)", row.url, exc)
    if not images:
        return {}
    keys = list(images)
    predictions = await asyncio.to_thread(classifier.predict, [images[k] for k in keys])
    return dict(zip(keys, predictions, strict=True))


def _cache_vectors(
    db: Database,
    classifier: Classifier,
    predictions: dict[str, Prediction],
    shas: dict[str, str],
    clock: Clock,
) -> None:
    """Cache the embeddings (and color features) of re-downloaded images for the next run."""
    by_content = [(shas[key], p) for key, p in predictions.items() if key in shas]
    with db.write() as session:
        save_vectors(session, classifier, by_content, clock.now())


def _model_fields(settings: Settings, prediction: Prediction, version: str) -> dict[str, Any]:
    fields: dict[str, Any] = {
        "image_type": prediction.image_type,
        "type_scores": prediction.type_scores,
        "confidence": prediction.confidence,
        "model_version": version,
        "novelty": prediction.novelty,
    }
    if settings.color_provider == "builtin":
        # A vendor's colors are kept: this model did not name them.
        fields["color"] = None if prediction.image_type == "Placeholder" else prediction.color
        fields["color_scores"] = prediction.color_scores
        fields["color_reason"] = None
    return fields


def _save(
    db: Database,
    version: str,
    values: list[dict[str, Any]],
    report: ReclassifyReport,
    clock: Clock,
) -> None:
    """Write ``version``'s answers if it is still production, in one transaction.

    Raises:
        ReclassifySupersededError: Production names another version; nothing is written.
    """
    with db.write() as session:
        # Read under a share lock in the write's own transaction: a promotion or rollback
        # committing between a check and the write would let a superseded model's
        # answers overwrite those of the run that follows it.
        production = version_repo.alias_version_locked(session, version_repo.PRODUCTION)
        if production != version:
            raise ReclassifySupersededError(version, production, report.saved)
        image_repo.update_model_fields(session, values, chunk=_CHUNK)
        if report.request_id is not None:
            request_repo.note_progress(session, report.request_id, clock.now())
    report.saved += len(values)
