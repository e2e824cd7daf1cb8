"""Classify an advertiser's inventory: revalidate, fetch, key, decode, run the model, resolve fixes.

This is the one function behind ``POST /v1/classify``, the job worker and the
benchmarks. It never raises for a bad image: each one becomes a ``skipped``
result with a machine-readable reason.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Collection, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace

from sqlalchemy.orm import Session

from cartag.clock import Clock
from cartag.errors import DecodeError, FetchError
from cartag.imaging.decode import decode_image
from cartag.imaging.keys import (
    choose_image_key,
    content_key,
    content_sha256,
    phash,
    request_url,
    validators_trusted,
)
from cartag.models.batching import MicroBatcher
from cartag.models.classifier import Classifier, Prediction, settings_plan
from cartag.models.color_providers import (
    BuiltinColorProvider,
    ColorAnswer,
    ColorProvider,
    ColorQuery,
)
from cartag.net.fetch import Fetcher
from cartag.net.outcomes import Failed, Fetched, FetchRequest, NotModified, Validators
from cartag.pipeline.adaptation import Adapted, AdvertiserAdapters
from cartag.pipeline.bookkeeping import AdvertiserImages
from cartag.pipeline.fixes import find_fixes, resolve
from cartag.pipeline.outcomes import (
    Cached,
    New,
    Outcome,
    Skip,
    lookup_urls,
    match_known,
    store_new,
)
from cartag.pipeline.results import ClassifyResult, ImageRequest, skipped
from cartag.pipeline.rollups import AnswerCounter
from cartag.redaction import has_password
from cartag.settings import Settings
from cartag.store.cache import LookupCache, UrlLookup
from cartag.store.db import Database
from cartag.telemetry import Telemetry, host_of
from cartag.vocab import parse_scrape_color

log = logging.getLogger(__name__)

# A large inventory is resolved in chunks of this many model batches per runner,
# this many chunks at a time (see ClassifyService.classify).
_CHUNK_BATCHES = 4
_CHUNKS_IN_FLIGHT = 3
# Images decoded per thread hop (see ClassifyService._classify_new).
_DECODE_GROUP = 8


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
        self._answers = AnswerCounter(
            db, clock, self.telemetry, interval_s=settings.monitor_flush_s
        )
        self._answers.know_model(classifier.version, classifier.far_threshold)
        self._advertisers = AdvertiserImages(db, clock, self.telemetry)
        self.adapters = AdvertiserAdapters(settings.advertiser_adaptation)
        # Decoding and inference are CPU-bound; keep them off the event loop.
        self._decode_pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="cartag-decode")
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

    def adapted(
        self, session: Session, advertiser_id: str, image_keys: Collection[str]
    ) -> dict[str, Adapted]:
        """These images' answers adapted to the advertiser's fixes, by the serving model.

        Empty for an advertiser with adaptation off or without fixes (see
        :mod:`cartag.pipeline.adaptation`).
        """
        return self.adapters.adapt(session, advertiser_id, self.classifier, image_keys)

    def close(self) -> None:
        self._decode_pool.shutdown(wait=False, cancel_futures=True)
        self._batcher.close()
        self._answers.close()

    def swap_classifier(self, classifier: Classifier) -> Classifier:
        """Serve ``classifier`` from now on (a hot-swap after a promotion).

        Images already in a running batch get the old model's answer, tagged with the
        old version; later ones the new model's. No request fails or waits.

        Returns:
            The classifier that was in use.
        """
        self._answers.know_model(classifier.version, classifier.far_threshold)
        old = self._batcher.swap(classifier)
        self.classifier = classifier
        self.telemetry.model_loaded(
            classifier.version, classifier.backbone_id, classifier.int8_problem
        )
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
        outcomes: dict[str, Outcome] = {}
        urls: list[str] = []
        for request in requests:
            try:
                urls.append(request_url(request.url))
            except FetchError as exc:
                # A URL that can't be fetched or stored is this image's skip, never the
                # batch's failure; its key is no URL, so it is never looked up or fetched.
                urls.append(f"\0{exc.reason}")
                outcomes[urls[-1]] = Skip(exc.reason)
        unique = [url for url in dict.fromkeys(urls) if url not in outcomes]
        known = lookup_urls(self.db, self.lookup_cache, unique)
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
                outcomes[url] = Cached(row)
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
        revalidated: list[str] = []  # answered 304: recorded once, after all chunks

        async def run(chunk: list[str]) -> None:
            async with window:
                found = await self._resolve_urls(chunk, known, stats, revalidated)
                await self._classify_new(
                    [o for o in found.values() if isinstance(o, New)], found, stats
                )
                outcomes.update(found)

        tasks = [asyncio.create_task(run(chunk)) for chunk in self._chunks(pending)]
        try:
            # gather, not a TaskGroup: the caller gets the error itself (a ModelError
            # is a 503), not an ExceptionGroup.
            await asyncio.gather(*tasks)
        except BaseException:
            for task in tasks:
                task.cancel()
            raise
        await self._record_revalidations(revalidated, known)
        return await self._finish(advertiser_id, requests, urls, outcomes, stats)

    def _chunks(self, pending: list[str]) -> list[list[str]]:
        """``pending`` in chunks of ``_CHUNK_BATCHES`` model batches per runner.

        The first chunk is one batch per runner: the model starts as soon as those
        are decoded, not after a whole chunk's downloads (a cold start of a few
        hundred images otherwise left a core idle for a tenth of the call).
        """
        first = self._batcher.max_batch * self._batcher.workers
        size = _CHUNK_BATCHES * first
        chunks = [pending[:first]] if pending else []
        chunks += [pending[start : start + size] for start in range(first, len(pending), size)]
        return chunks

    async def classify_contents(
        self,
        advertiser_id: str,
        contents: Sequence[tuple[str, bytes]],
        stats: ClassifyStats | None = None,
    ) -> list[ClassifyResult]:
        """Classify images given as bytes (local files: ``cartag classify-files``).

        The same pipeline as :meth:`classify` without the download: each image is keyed
        by its content (the same bytes found at a URL share its cached answer and
        fixes), decoded, classified, stored, and answered with the advertiser's fixes.

        Args:
            advertiser_id: Whose overrides apply.
            contents: ``(name, bytes)`` pairs; the name (a ``file://`` URI for files)
                is the result's ``url`` and the image's stored URL.
            stats: Optional counters to fill.

        Returns:
            One result per item, in order.
        """
        stats = stats if stats is not None else ClassifyStats()
        outcomes: dict[str, Outcome] = {}
        new: dict[str, New] = {}
        for name, data in contents:
            if name in outcomes or name in new:
                continue
            sha = content_sha256(data)
            validators = Validators(etag=None, last_modified=None, content_length=len(data))
            fetched = Fetched(name, name, data, validators, content_type=None)
            new[name] = New(fetched, content_key(sha), sha)
        stats.fetched += len(new)
        known = await asyncio.to_thread(
            match_known,
            self.db,
            self.lookup_cache,
            self.telemetry,
            list(new.values()),
            [],
            self.clock,
        )
        for name, item in new.items():
            if item.key in known:
                outcomes[name] = Cached(known[item.key])
        fresh = [item for name, item in new.items() if name not in outcomes]
        for start in range(0, len(fresh), 64):  # bounds the pixels held at once
            chunk = {item.fetched.url: item for item in fresh[start : start + 64]}
            found: dict[str, Outcome] = dict(chunk)
            await self._classify_new(list(chunk.values()), found, stats)
            outcomes.update(found)
        requests = [ImageRequest(name) for name, _ in contents]
        urls = [name for name, _ in contents]
        return await self._finish(advertiser_id, requests, urls, outcomes, stats)

    async def _finish(
        self,
        advertiser_id: str,
        requests: Sequence[ImageRequest],
        urls: list[str],
        outcomes: dict[str, Outcome],
        stats: ClassifyStats,
    ) -> list[ClassifyResult]:
        """Answer with the fixes, remember the advertiser's images, count the answers."""
        # In a worker thread: for an advertiser with fixes and adaptation on, reading the
        # embeddings and applying its adapter take 30-100 ms per 1,000 images, which
        # would hold up every other request on the event loop.
        results = await asyncio.to_thread(
            self._answer, advertiser_id, requests, urls, outcomes, stats
        )
        await self._advertisers.remember(
            advertiser_id,
            ((o.image.image_key, url) for url, o in outcomes.items() if isinstance(o, Cached)),
        )
        await self._answers.record(advertiser_id, results)
        return results

    def flush_rollup(self) -> int:
        """Write the monitoring counts kept in memory now (tests, shutdown)."""
        return self._answers.flush()

    async def _resolve_urls(
        self,
        urls: list[str],
        known_urls: dict[str, UrlLookup],
        stats: ClassifyStats,
        revalidated: list[str],
    ) -> dict[str, Outcome]:
        """Fetch ``urls`` and sort the answers; the 304s' URLs are added to ``revalidated``."""
        # Short indexed reads/writes stay on the loop: a thread hop costs more than they do.
        fetch_requests = []
        untrusted = self.settings.content_hash_hosts
        for url in urls:
            row = known_urls.get(url)
            if row is not None and validators_trusted(url, untrusted):
                fetch_requests.append(FetchRequest(url, row.etag, row.last_modified))
            else:
                # New, or on a host whose 304 cannot be believed: the bytes decide.
                fetch_requests.append(FetchRequest(url))
        fetched = await self.fetcher.fetch_many(fetch_requests)

        outcomes: dict[str, Outcome] = {}
        new: list[New] = []
        for url, outcome in zip(urls, fetched, strict=True):
            if isinstance(outcome, NotModified):
                stats.not_modified += 1
                outcomes[url] = Cached(known_urls[url])
                revalidated.append(url)
            elif isinstance(outcome, Failed):
                outcomes[url] = Skip(outcome.reason)
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
                item = New(outcome, key, sha)
                outcomes[url] = item
                new.append(item)

        known = match_known(self.db, self.lookup_cache, self.telemetry, new, [], self.clock)
        for item in new:
            if item.key in known:
                outcomes[item.fetched.url] = Cached(known[item.key])
        return outcomes

    async def _record_revalidations(
        self, revalidated: list[str], known_urls: dict[str, UrlLookup]
    ) -> None:
        """Record when the 304s' URLs were revalidated: one write for the whole call.

        Per chunk, this was a write transaction every few dozen images of a re-run.
        """
        if not revalidated:
            return
        await asyncio.to_thread(
            match_known, self.db, self.lookup_cache, self.telemetry, [], revalidated, self.clock
        )
        checked = self.clock.now().timestamp()
        # Written back only where the cache still holds what was read: another request
        # may have stored a URL's new image and cleared its lookup since.
        self.lookup_cache.touch([known_urls[url] for url in revalidated], checked)

    def _download_failed(self, failed: Failed) -> None:
        try:
            self.telemetry.download_failed(failed.reason, host_of(failed.url))
        except Exception:  # noqa: BLE001 - metrics must never fail a classify
            log.exception("telemetry failed on a download failure")

    async def _classify_new(
        self, new: list[New], outcomes: dict[str, Outcome], stats: ClassifyStats
    ) -> None:
        if not new:
            return
        loop = asyncio.get_running_loop()
        # A few images per thread hop: each finished future wakes the event loop, and
        # one hop per image cost as much CPU as the pHash.
        groups = [new[start : start + _DECODE_GROUP] for start in range(0, len(new), _DECODE_GROUP)]
        done = await asyncio.gather(
            *(loop.run_in_executor(self._decode_pool, self._decode_all, group) for group in groups)
        )
        decoded = [error for group in done for error in group]
        ready = [item for item, error in zip(new, decoded, strict=True) if error is None]
        for item, error in zip(new, decoded, strict=True):
            if error is not None:
                outcomes[item.fetched.url] = Skip(error)
        if not ready:
            return
        images = [item.model_image for item in ready if item.model_image is not None]
        predictions = await self._batcher.predict(images)
        stats.model_runs += len(predictions)
        answers = await self._colors(ready, predictions)
        saved = await asyncio.to_thread(
            store_new,
            self.db,
            self.lookup_cache,
            self.classifier,
            ready,
            predictions,
            answers,
            self.clock.now(),
        )
        for item in ready:
            outcomes[item.fetched.url] = Cached(saved[item.key], fresh=True)
            item.image = item.model_image = None  # release pixels early

    async def _colors(
        self, ready: list[New], predictions: Sequence[Prediction]
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

    def _decode_all(self, items: list[New]) -> list[str | None]:
        return [self._decode(item) for item in items]

    def _decode(self, item: New) -> str | None:
        try:
            decoded = decode_image(
                item.fetched.content,
                max_pixels=self.settings.max_image_pixels,
                max_decode_bytes=self.settings.max_decode_mb * 1024 * 1024,
                # The model's own (Classifier.draft_size); the color evidence and
                # the pHash are taken of the model's view, so they need no more.
                draft_size=self.classifier.draft_size(),
            )
        except DecodeError as exc:
            return exc.reason
        item.image = decoded.image
        item.width, item.height = decoded.width, decoded.height
        # Resized once, here, in the decode threads: the model, the color evidence and
        # the pHash all look at this view (a 32 x 32 hash of the 224 x 224 view is the
        # photo's to within rounding: benchmarks/RESULTS.md, "Performance, second round").
        item.model_image = self.classifier.prepare(decoded.image)
        item.phash = phash(item.model_image)
        return None

    def _answer(
        self,
        advertiser_id: str,
        requests: Sequence[ImageRequest],
        urls: list[str],
        outcomes: dict[str, Outcome],
        stats: ClassifyStats,
    ) -> list[ClassifyResult]:
        cached = {o.image.image_key: o.image for o in outcomes.values() if isinstance(o, Cached)}
        with self.db.read() as session:
            fixes = find_fixes(
                session,
                advertiser_id,
                [(key, row.phash) for key, row in cached.items()],
                max_distance=self.settings.phash_max_distance,
            )
            adapted = self.adapted(session, advertiser_id, list(cached))
        results = []
        for request, url in zip(requests, urls, strict=True):
            outcome = outcomes[url]
            if isinstance(outcome, Skip):
                stats.skipped += 1
                results.append(skipped(request.url, outcome.reason))
                continue
            # Every downloaded image is cached, classified or skipped by now.
            assert isinstance(outcome, Cached)
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
                novelty=image.novelty,  # for the drift rollup
                adapted=adapted.get(image.image_key),
            )
            if scrape_reason is not None and result.color_reason is None:
                result = replace(result, color_reason=scrape_reason)
            results.append(result)
        return results
