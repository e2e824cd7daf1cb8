"""Classify an advertiser's inventory: revalidate, fetch, key, decode, run the model, resolve fixes.

This is the one function behind ``POST /v1/classify``, the job worker and the
benchmarks. It never raises for a bad image: each one becomes a ``skipped``
result with a machine-readable reason.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace

from PIL import Image
from sqlalchemy.orm import Session

from cartag.clock import Clock
from cartag.errors import DecodeError, FetchError
from cartag.imaging.decode import decode_image
from cartag.imaging.keys import choose_image_key, content_sha256, phash, request_url
from cartag.models.batching import MicroBatcher
from cartag.models.classifier import Classifier, Prediction, settings_plan
from cartag.models.color_providers import (
    BuiltinColorProvider,
    ColorAnswer,
    ColorProvider,
    ColorQuery,
)
from cartag.net.fetch import Fetcher
from cartag.net.outcomes import Failed, Fetched, FetchRequest, NotModified
from cartag.ops.daily import RollupBuffer
from cartag.pipeline.resolve import resolve
from cartag.pipeline.results import ClassifyResult, ImageRequest, skipped
from cartag.redaction import has_password, strip_password
from cartag.settings import Settings
from cartag.store import advertisers as registry_repo
from cartag.store import embeddings as embedding_repo
from cartag.store import fixes as fix_repo
from cartag.store import images as image_repo
from cartag.store.cache import LookupCache, UrlLookup
from cartag.store.db import Database
from cartag.store.health import storage_problem
from cartag.store.tables import ImageRow
from cartag.telemetry import Telemetry, host_of
from cartag.vocab import parse_scrape_color, read_stored_color

log = logging.getLogger(__name__)


@dataclass
class _Cached:
    """A URL answered by a stored image; ``fresh`` when the model ran for it just now.

    ``image`` is the stored row, or for a known URL its lookup (the answer fields only).
    """

    image: ImageRow | UrlLookup
    fresh: bool = False


@dataclass
class _New:
    """A downloaded image the model has to classify."""

    fetched: Fetched
    key: str
    sha256: str
    image: Image.Image | None = None
    width: int | None = None
    height: int | None = None
    phash: str | None = None


@dataclass
class _Skip:
    reason: str


_Outcome = _Cached | _New | _Skip

# A large inventory is resolved in chunks of this many model batches per runner,
# this many chunks at a time (see ClassifyService.classify).
_CHUNK_BATCHES = 4
_CHUNKS_IN_FLIGHT = 3
# Bound on the in-process set of (advertiser, image) pairs recorded today.
_SEEN_LIMIT = 2_000_000


@dataclass
class ClassifyStats:
    """Counters of one call, for logs, metrics and benchmarks."""

    fetched: int = 0
    not_modified: int = 0
    model_runs: int = 0
    skipped: int = 0


class ClassifyService:
    """Owns the fetcher, the classifier and a small thread pool for CPU work.

    Args:
        settings: Runtime settings.
        db: The store.
        fetcher: Downloads (injected so tests can point it at a local server).
        classifier: The model behind the answers.
        clock: Time source for stored timestamps.
        color_provider: Names the color of newly classified images; default: the
            built-in model's color. The caller closes it.
        telemetry: Told about answers, download failures and model batches (metrics);
            default: nobody.
        lookup_cache: Read-through cache of URL lookups (Redis); default: none.
    """

    def __init__(
        self,
        settings: Settings,
        db: Database,
        fetcher: Fetcher,
        classifier: Classifier,
        clock: Clock,
        color_provider: ColorProvider | None = None,
        *,
        telemetry: Telemetry | None = None,
        lookup_cache: LookupCache | None = None,
    ) -> None:
        self.settings = settings
        self.telemetry = telemetry or Telemetry()
        self.lookup_cache = lookup_cache or LookupCache()
        self.db = db
        self.fetcher = fetcher
        self.classifier = classifier
        self.clock = clock
        self.color_provider = color_provider or BuiltinColorProvider()
        self._rollup = RollupBuffer(db, interval_s=settings.monitor_flush_s)
        # Decoding and inference are CPU-bound; keep them off the event loop.
        self._decode_pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="cartag-decode")
        # (advertiser, image key) pairs recorded today, so known inventories cost no write.
        self._seen: set[tuple[str, str]] = set()
        self._seen_day: dt.date | None = None
        # Inference runs in the batcher's runner threads, merging concurrent requests;
        # as many batches run at once as the backbone was loaded to allow.
        plan = settings_plan(settings)
        self._batcher = MicroBatcher(
            classifier,
            max_batch=settings.inference_batch_size,
            max_delay_s=settings.max_batch_delay_ms / 1000,
            telemetry=self.telemetry,
            workers=plan.workers,
        )

    def close(self) -> None:
        self._decode_pool.shutdown(wait=False, cancel_futures=True)
        self._batcher.close()
        self._rollup.close()

    def swap_classifier(self, classifier: Classifier) -> Classifier:
        """Serve ``classifier`` from now on (a hot-swap after a promotion).

        Images already in a running batch get the old model's answer, tagged with the
        old version; later ones the new model's. No request fails or waits.

        Returns:
            The classifier that was in use.
        """
        old = self._batcher.swap(classifier)
        self.classifier = classifier
        self.telemetry.model_loaded(classifier.version)
        return old

    async def classify(
        self,
        advertiser_id: str,
        requests: Sequence[ImageRequest],
        stats: ClassifyStats | None = None,
    ) -> list[ClassifyResult]:
        """Classify images in request order.

        Args:
            advertiser_id: Whose overrides apply.
            requests: The inventory's images; duplicates are fetched once.
            stats: Optional counters to fill.

        Returns:
            One result per request, in order.
        """
        stats = stats if stats is not None else ClassifyStats()
        outcomes: dict[str, _Outcome] = {}
        urls: list[str] = []
        for request in requests:
            try:
                urls.append(request_url(request.url))
            except FetchError as exc:
                # A URL that can't be fetched or stored is this image's skip, never the
                # batch's failure; its key is no URL, so it is never looked up or fetched.
                urls.append(f"\0{exc.reason}")
                outcomes[urls[-1]] = _Skip(exc.reason)
        unique = [url for url in dict.fromkeys(urls) if url not in outcomes]
        known = self._lookup_urls(unique)
        # URLs revalidated less than revalidate_after_s ago are answered from their
        # lookup alone: no request to their server, no chunk.
        fresh_for = self.settings.revalidate_after_s
        fresh_since = self.clock.now().timestamp() - fresh_for if fresh_for else None
        pending = []
        for url in unique:
            row = known.get(url)
            # A URL with a password is always revalidated: only its server can tell
            # whether this password may see the image (the store keeps no password).
            if (
                row is not None
                and fresh_since is not None
                and row.checked_at >= fresh_since
                and not has_password(url)
            ):
                outcomes[url] = _Cached(row)
            else:
                pending.append(url)
        # Revalidations (URLs with a cached answer) first, so that they fill chunks of
        # their own: a chunk waits for its slowest download, and a cached answer must
        # not wait behind a slow server's fresh image. (The fetcher gives conditional
        # requests their own connection slots too.)
        pending.sort(key=lambda url: url not in known)
        # Chunks flow through fetch -> decode -> model -> store as a pipeline: the
        # downloads and store writes of some chunks overlap the model's work on
        # another, and only the chunks in flight hold image bytes and pixels.
        window = asyncio.Semaphore(_CHUNKS_IN_FLIGHT)

        async def run(chunk: list[str]) -> None:
            async with window:
                found = await self._resolve_urls(chunk, known, stats)
                await self._classify_new(
                    [o for o in found.values() if isinstance(o, _New)], found, stats
                )
                outcomes.update(found)

        size = _CHUNK_BATCHES * self._batcher.max_batch * self._batcher.workers
        tasks = [
            asyncio.create_task(run(pending[start : start + size]))
            for start in range(0, len(pending), size)
        ]
        try:
            # gather, not a TaskGroup: the caller gets the error itself (a ModelError
            # is a 503), not an ExceptionGroup.
            await asyncio.gather(*tasks)
        except BaseException:
            for task in tasks:
                task.cancel()
            raise
        results = self._answer(advertiser_id, requests, urls, outcomes, stats)
        await self._remember_advertiser(advertiser_id, outcomes)
        await self._record_answers(advertiser_id, results)
        return results

    async def _record_answers(self, advertiser_id: str, results: list[ClassifyResult]) -> None:
        """Report the answers to telemetry and add them to the daily monitoring rollup."""
        try:
            self.telemetry.images_answered(results)
        except Exception:  # noqa: BLE001 - metrics must never fail an answered request
            log.exception("telemetry failed on %d answers", len(results))
        day = self.clock.now().astimezone(dt.UTC).date()
        try:
            if self._rollup.interval_s > 0:
                self._rollup.add(day, advertiser_id, results)  # in memory: no write here
            else:
                await asyncio.to_thread(self._rollup.add, day, advertiser_id, results)
        except Exception:  # noqa: BLE001 - monitoring must never fail an answered request
            log.exception("could not add the answers of %s to the daily rollup", advertiser_id)

    def flush_rollup(self) -> int:
        """Write the monitoring counts kept in memory now (tests, shutdown)."""
        return self._rollup.flush()

    async def _remember_advertiser(self, advertiser_id: str, outcomes: dict[str, _Outcome]) -> None:
        """Record which images this advertiser uses (re-classification after a promotion).

        Written at most once per advertiser, image and day per process: the cached path
        stays free of writes once an inventory has been seen today.
        """
        today = self.clock.now().date()
        if today != self._seen_day or len(self._seen) > _SEEN_LIMIT:
            self._seen.clear()
            self._seen_day = today
        keys = {o.image.image_key for o in outcomes.values() if isinstance(o, _Cached)}
        new = [key for key in keys if (advertiser_id, key) not in self._seen]
        if not new:
            return
        try:
            await asyncio.to_thread(self._record_advertiser_images, advertiser_id, new)
        except Exception as exc:  # noqa: BLE001 - bookkeeping must never fail an answered request
            if storage_problem(exc) is not None:
                self._bookkeeping_failed("advertiser_images", exc)
            else:
                log.exception("could not record the images of advertiser %s", advertiser_id)
            return
        self._seen.update((advertiser_id, key) for key in new)

    def _bookkeeping_failed(self, operation: str, exc: BaseException) -> None:
        """A bookkeeping write failed on a storage problem: warn and count; answers still go out."""
        log.warning(
            "could not record %s: %s (%r); the answers are served anyway",
            operation,
            storage_problem(exc),
            getattr(exc, "orig", None) or exc,
        )
        try:
            self.telemetry.storage_failed(operation)
        except Exception:  # noqa: BLE001 - metrics must never fail a classify
            log.exception("telemetry failed on a storage failure")

    def _record_advertiser_images(self, advertiser_id: str, keys: list[str]) -> None:
        with self.db.write() as session:
            registry_repo.record_advertiser_images(session, advertiser_id, keys, self.clock.now())

    async def _resolve_urls(
        self, urls: list[str], known_urls: dict[str, UrlLookup], stats: ClassifyStats
    ) -> dict[str, _Outcome]:
        # Short indexed reads/writes stay on the loop: a thread hop costs more than they do.
        fetch_requests = []
        for url in urls:
            row = known_urls.get(url)
            if row is not None:
                fetch_requests.append(FetchRequest(url, row.etag, row.last_modified))
            else:
                fetch_requests.append(FetchRequest(url))
        fetched = await self.fetcher.fetch_many(fetch_requests)

        outcomes: dict[str, _Outcome] = {}
        new: list[_New] = []
        revalidated: list[str] = []
        for url, outcome in zip(urls, fetched, strict=True):
            if isinstance(outcome, NotModified):
                stats.not_modified += 1
                outcomes[url] = _Cached(known_urls[url])
                revalidated.append(url)
            elif isinstance(outcome, Failed):
                outcomes[url] = _Skip(outcome.reason)
                self._download_failed(outcome)
            else:
                stats.fetched += 1
                sha = content_sha256(outcome.content)
                v = outcome.validators
                key = choose_image_key(
                    url,
                    v.etag,
                    v.last_modified,
                    v.content_length,
                    sha,
                    content_hash_hosts=self.settings.content_hash_hosts,
                )
                item = _New(outcome, key, sha)
                outcomes[url] = item
                new.append(item)

        known = self._match_known(new, revalidated)
        if revalidated:
            checked = self.clock.now().timestamp()
            self.lookup_cache.set_many(
                [replace(known_urls[url], checked_at=checked) for url in revalidated]
            )
        for item in new:
            if item.key in known:
                outcomes[item.fetched.url] = _Cached(known[item.key])
        return outcomes

    def _download_failed(self, failed: Failed) -> None:
        try:
            self.telemetry.download_failed(failed.reason, host_of(failed.url))
        except Exception:  # noqa: BLE001 - metrics must never fail a classify
            log.exception("telemetry failed on a download failure")

    def _lookup_urls(self, urls: list[str]) -> dict[str, UrlLookup]:
        """Known URLs with their image's answer: from the lookup cache, else the database.

        Returns them by the URL as fetched; they are stored (and cached) without the
        URL's password (:func:`~cartag.redaction.strip_password`).
        """
        stored = {url: strip_password(url) for url in urls}
        keys = list(dict.fromkeys(stored.values()))
        found = self.lookup_cache.get_many(keys)
        missing = [key for key in keys if key not in found] if found else keys
        if missing:
            with self.db.read() as session:
                loaded = image_repo.lookup_urls(session, missing)
            self.lookup_cache.set_many(loaded)
            found.update((entry.url, entry) for entry in loaded)
        return {url: found[key] for url, key in stored.items() if key in found}

    def _match_known(self, new: list[_New], revalidated: list[str]) -> dict[str, ImageRow]:
        """Record 304s; find downloaded images already cached by key or by bytes.

        Returns the cached row of each such image's key.
        """
        if not new and not revalidated:
            return {}  # no write transaction on the cached path
        now = self.clock.now()
        known: list[_New] = []
        try:
            with self.db.write() as session:
                image_repo.touch_urls(session, [strip_password(url) for url in revalidated], now)
                by_key = image_repo.get_images(session, {n.key for n in new})
                by_sha = image_repo.get_images_by_sha(
                    session, {n.sha256 for n in new if n.key not in by_key}
                )
                for item in new:
                    cached = by_key.get(item.key)
                    if cached is None and item.sha256 in by_sha:
                        # The same bytes are cached under another key: reuse that answer.
                        by_key[item.key] = _copy_answer(session, by_sha[item.sha256], item, now)
                    if item.key in by_key:
                        known.append(item)
                image_repo.save_urls(session, [_url_entry(item) for item in known], now)
        except Exception as exc:
            if new or storage_problem(exc) is None:
                raise  # new images must be stored: the caller answers 503
            # Only 304s: the cached answers are still right. When they were revalidated
            # is bookkeeping, and a full or read-only store must not fail them.
            self._bookkeeping_failed("revalidation", exc)
            return {}
        # These URLs may serve another image now.
        self.lookup_cache.invalidate([strip_password(item.fetched.url) for item in known])
        return {item.key: by_key[item.key] for item in known}

    async def _classify_new(
        self, new: list[_New], outcomes: dict[str, _Outcome], stats: ClassifyStats
    ) -> None:
        if not new:
            return
        loop = asyncio.get_running_loop()
        decoded = await asyncio.gather(
            *(loop.run_in_executor(self._decode_pool, self._decode, item) for item in new)
        )
        ready = [item for item, error in zip(new, decoded, strict=True) if error is None]
        for item, error in zip(new, decoded, strict=True):
            if error is not None:
                outcomes[item.fetched.url] = _Skip(error)
        if not ready:
            return
        images = [item.image for item in ready if item.image is not None]
        predictions = await self._batcher.predict(images)
        stats.model_runs += len(predictions)
        answers = await self._colors(ready, predictions)
        saved = await asyncio.to_thread(self._store_new, ready, predictions, answers)
        for item in ready:
            outcomes[item.fetched.url] = _Cached(saved[item.key], fresh=True)
            item.image = None  # release pixels early; the batch may be large

    async def _colors(
        self, ready: list[_New], predictions: Sequence[Prediction]
    ) -> list[ColorAnswer]:
        """Ask the color provider about the new images; its failures never fail the batch."""
        queries = [
            ColorQuery(item.fetched.url, item.image, prediction)
            for item, prediction in zip(ready, predictions, strict=True)
        ]
        name = self.color_provider.name
        try:
            answers = await self.color_provider.colors(queries)
            if len(answers) != len(queries):
                raise RuntimeError(f"{len(answers)} answers to {len(queries)} queries")
        except Exception:
            log.exception("color provider %s failed; the new images get no color", name)
            return [ColorAnswer(None, reason="color_provider_error")] * len(queries)
        return answers

    def _decode(self, item: _New) -> str | None:
        try:
            decoded = decode_image(
                item.fetched.content,
                max_pixels=self.settings.max_image_pixels,
                max_decode_bytes=self.settings.max_decode_mb * 1024 * 1024,
            )
        except DecodeError as exc:
            return exc.reason
        item.image = decoded.image
        item.width, item.height = decoded.width, decoded.height
        item.phash = phash(decoded.image)
        return None

    def _new_image(
        self, item: _New, prediction: Prediction, answer: ColorAnswer
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
            model_version=prediction.model_version or self.classifier.version,
            color_reason=answer.reason,
        )

    def _store_new(
        self,
        ready: list[_New],
        predictions: Sequence[Prediction],
        answers: Sequence[ColorAnswer],
    ) -> dict[str, ImageRow]:
        """Store new answers, URLs and embeddings in one transaction (in a worker thread).

        Returns:
            The stored row of each image key.
        """
        now = self.clock.now()
        triples = list(zip(ready, predictions, answers, strict=True))
        with self.db.write() as session:
            image_repo.save_images(
                session, [self._new_image(item, p, a) for item, p, a in triples], now
            )
            image_repo.save_urls(session, [_url_entry(item) for item in ready], now)
            self.lookup_cache.invalidate(
                [strip_password(item.fetched.url) for item in ready], [item.key for item in ready]
            )
            self._save_embeddings(session, triples, now)
            return image_repo.get_images(session, {item.key for item in ready})

    def _save_embeddings(
        self,
        session: Session,
        triples: list[tuple[_New, Prediction, ColorAnswer]],
        now: dt.datetime,
    ) -> None:
        """Cache embeddings (and color features) by content, for retraining and re-classifying.

        Only predictions of the model served now: across a hot-swap to another backbone,
        an old batch's vectors must not be stored under the new backbone's id.
        """
        model = self.classifier
        current = [(item, p) for item, p, _ in triples if p.model_version in (None, model.version)]
        if model.backbone_id is not None:
            vectors = {item.sha256: p.embedding for item, p in current if p.embedding is not None}
            embedding_repo.save_embeddings(session, model.backbone_id, vectors, now)
        features_id = getattr(model, "color_features", None)
        if isinstance(features_id, str):
            extra = {
                item.sha256: p.color_features for item, p in current if p.color_features is not None
            }
            embedding_repo.save_embeddings(session, features_id, extra, now)

    def _answer(
        self,
        advertiser_id: str,
        requests: Sequence[ImageRequest],
        urls: list[str],
        outcomes: dict[str, _Outcome],
        stats: ClassifyStats,
    ) -> list[ClassifyResult]:
        cached = {o.image.image_key: o.image for o in outcomes.values() if isinstance(o, _Cached)}
        with self.db.read() as session:
            fixes = fix_repo.find_fixes(
                session,
                advertiser_id,
                [(key, row.phash) for key, row in cached.items()],
                max_distance=self.settings.phash_max_distance,
            )
        results = []
        for request, url in zip(requests, urls, strict=True):
            outcome = outcomes[url]
            if isinstance(outcome, _Skip):
                stats.skipped += 1
                results.append(skipped(request.url, outcome.reason))
                continue
            # Every downloaded image is cached, classified or skipped by now.
            assert isinstance(outcome, _Cached)
            image = outcome.image
            # An unknown scrape color is ignored (as "N/A" is), never the batch's failure.
            scrape_color, scrape_reason = parse_scrape_color(request.scrape_color)
            result = resolve(
                image,
                fixes.get(image.image_key),
                scrape_color,
                request.url,
                outcome.fresh,
                low_confidence_threshold=self.settings.low_confidence_threshold,
            )
            if scrape_reason is not None and result.color_reason is None:
                result = replace(result, color_reason=scrape_reason)
            results.append(result)
        return results


def _url_entry(item: _New) -> image_repo.UrlEntry:
    v = item.fetched.validators
    # Stored without the URL's password: it is needed for the download only.
    return image_repo.UrlEntry(
        strip_password(item.fetched.url), item.key, v.etag, v.last_modified, v.content_length
    )


def _copy_answer(session: Session, source: ImageRow, item: _New, now: dt.datetime) -> ImageRow:
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
        ),
        now,
    )
    return image_repo.get_images(session, [item.key])[item.key]
