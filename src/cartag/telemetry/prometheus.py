"""Prometheus metrics: :class:`PrometheusTelemetry` implements the telemetry boundary.

Each instance owns its own ``CollectorRegistry`` (an app = a registry), so several apps
in one process (tests) never collide, and ``/metrics`` shows only its app's figures.

Label cardinality is bounded: route labels are route templates, and host / advertiser
labels go through :class:`TopLabels`, which gives only the most frequent values their own
series and counts the rest as ``other``.

Multi-process deployments (several uvicorn workers, Celery workers): every process
exposes its own registry; scrape each one and aggregate in Prometheus (``sum by``).
"""

from __future__ import annotations

import collections
import heapq
import logging
import threading
from collections.abc import Callable, Iterable, Sequence

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from cartag.telemetry import AnsweredImage, Telemetry

log = logging.getLogger(__name__)

OTHER = "other"

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)
_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128)
_REQUEST_IMAGES_BUCKETS = (1, 5, 10, 50, 100, 250, 500, 1000, 5000)


class TopLabels:
    """Maps an unbounded label value (a host, an advertiser) onto a bounded set.

    Frequencies are tracked with the Space-Saving algorithm in ``4 * top_n`` slots; a
    value is its own label while it is among the ``top_n`` most frequent, else
    :data:`OTHER`. A value that drops out of the top keeps its (frozen) series and its
    later counts go to ``other``, so each series stays monotonic and the sum over all
    labels is exact. At most ``max_series`` values ever get their own label.

    Args:
        top_n: How many values may be their own label at a time.
        max_series: Most distinct values ever labelled (default ``2 * top_n``).
    """

    def __init__(self, top_n: int, max_series: int | None = None) -> None:
        if top_n < 0:
            raise ValueError("top_n must not be negative")
        self.top_n = top_n
        self.max_series = 2 * top_n if max_series is None else max_series
        self._capacity = max(4 * top_n, 1)
        self._counts: dict[str, int] = {}
        self._labelled: set[str] = set()
        self._lock = threading.Lock()

    def label(self, value: str) -> str:
        """Count one occurrence of ``value``; returns the label to use for it."""
        if self.top_n == 0:
            return OTHER
        with self._lock:
            counts = self._counts
            if value in counts:
                counts[value] += 1
            elif len(counts) < self._capacity:
                counts[value] = 1
            else:
                # Space-Saving: the newcomer takes the least frequent slot and inherits
                # its count (an over-estimate that makes heavy hitters win their slot).
                smallest = min(counts, key=counts.__getitem__)
                counts[value] = counts.pop(smallest) + 1
            top = heapq.nlargest(self.top_n, counts, key=counts.__getitem__)
            if value not in top:
                return OTHER
            if value in self._labelled:
                return value
            if len(self._labelled) >= self.max_series:
                return OTHER
            self._labelled.add(value)
            return value


class _ScrapedGauge(Collector):
    """A gauge by ``queue``, read at scrape time from functions the app registers.

    Args:
        name: The metric's name.
        documentation: Its help text.
    """

    def __init__(self, name: str, documentation: str) -> None:
        self.name = name
        self.documentation = documentation
        self._sources: list[Callable[[], dict[str, float]]] = []

    def add(self, read: Callable[[], dict[str, float]]) -> None:
        self._sources.append(read)

    def collect(self) -> Iterable[GaugeMetricFamily]:
        family = GaugeMetricFamily(self.name, self.documentation, labels=["queue"])
        values: dict[str, float] = {}
        for read in self._sources:
            try:
                values.update(read())
            except Exception:  # noqa: BLE001 - a failing source must not break the scrape
                log.exception("a %s source failed", self.name)
        for queue, value in sorted(values.items()):
            family.add_metric([queue], value)
        yield family


# The drift gauges (cartag.deploy.drift): metric name -> (help, {(version, advertiser): value}).
DRIFT_GAUGES: dict[str, str] = {
    "cartag_drift_flagged": "1 when the scope drifted from its model version's first week by "
    "the CARTAG_DRIFT_* rule, else 0 (also while it is not judged: too few images, or the "
    "version's first week).",
    "cartag_drift_far_share": "Share of the current window's images far from the training "
    "data (novelty beyond the model's held-out p95).",
    "cartag_drift_far_share_baseline": "The same share in the model version's first week.",
    "cartag_drift_mean_novelty": "Mean novelty (cosine distance to the nearest training "
    "centroid) of the current window's images.",
    "cartag_drift_confidence_delta": "Mean confidence now minus in the first week.",
    "cartag_drift_type_mix_tvd": "Total-variation distance of the type mix, now vs first week.",
    "cartag_drift_color_mix_tvd": "Total-variation distance of the color mix, now vs first week.",
    "cartag_drift_images": "Images answered in the current window.",
}
DriftValues = dict[str, dict[tuple[str, str], float]]


class _DriftCollector(Collector):
    """The drift gauges by (``version``, ``advertiser``), from a function the app registers
    (it caches the store's figures; the scrape only reads them)."""

    def __init__(self) -> None:
        self._read: Callable[[], DriftValues] | None = None

    def set(self, read: Callable[[], DriftValues]) -> None:
        self._read = read

    def collect(self) -> Iterable[GaugeMetricFamily]:
        values: DriftValues = {}
        if self._read is not None:
            try:
                values = self._read()
            except Exception:  # noqa: BLE001 - a failing source must not break the scrape
                log.exception("the drift gauges could not be read")
        for name, documentation in DRIFT_GAUGES.items():
            family = GaugeMetricFamily(name, documentation, labels=["version", "advertiser"])
            for (version, advertiser), value in sorted(values.get(name, {}).items()):
                family.add_metric([version, advertiser], value)
            yield family


class PrometheusTelemetry(Telemetry):
    """Telemetry recorded as Prometheus metrics in a private registry.

    Args:
        top_hosts: Hosts with their own ``host`` label on download failures.
        top_advertisers: Advertisers with their own label on the fix and answer counters
            (one ranking for all, so that fixed images over answers is a fix rate).
    """

    def __init__(self, *, top_hosts: int = 20, top_advertisers: int = 50) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self._hosts = TopLabels(top_hosts)
        self._advertisers = TopLabels(top_advertisers)
        self.requests = Counter(
            "cartag_http_requests",
            "HTTP requests answered, by route template, method and status.",
            ["route", "method", "status"],
            registry=r,
        )
        self.latency = Histogram(
            "cartag_http_request_duration_seconds",
            "HTTP request latency, by route template and method.",
            ["route", "method"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.images = Counter(
            "cartag_images",
            "Images answered by classify (requests and jobs), by status and answer source "
            "(source is 'none' for skipped images).",
            ["status", "source"],
            registry=r,
        )
        self.model_answers = Counter(
            "cartag_model_answers",
            "Answered images (not skipped) by the model version that made the answer (a cached "
            "answer keeps the version that made it) and status (classified or cached).",
            ["version", "status"],
            registry=r,
        )
        self.advertiser_images = Counter(
            "cartag_advertiser_images",
            "Answered images (not skipped) by advertiser (the most active; the rest are "
            "'other'): with cartag_fixed_images_total, an advertiser's fix rate.",
            ["advertiser"],
            registry=r,
        )
        self.skipped = Counter(
            "cartag_images_skipped",
            "Images skipped, by machine-readable reason.",
            ["reason"],
            registry=r,
        )
        self.download_failures = Counter(
            "cartag_download_failures",
            "Image downloads that failed, by reason and host (the most frequent hosts; "
            "the rest are 'other').",
            ["reason", "host"],
            registry=r,
        )
        self.cache_lookups = Counter(
            "cartag_cache_lookups",
            "Answered images by cache result: hit (answered from the store) or miss "
            "(the model ran).",
            ["result"],
            registry=r,
        )
        self.cache_hit_ratio = Gauge(
            "cartag_cache_hit_ratio",
            "Cache hits / (hits + misses) since the process started; for a window use "
            "rate(cartag_cache_lookups_total{result='hit'}[5m]) / "
            "rate(cartag_cache_lookups_total[5m]).",
            registry=r,
        )
        self.request_images = Histogram(
            "cartag_classify_images",
            "Images per classify call (an API request or a job chunk).",
            buckets=_REQUEST_IMAGES_BUCKETS,
            registry=r,
        )
        self.batch_size = Histogram(
            "cartag_inference_batch_size",
            "Images per model call (micro-batch size).",
            buckets=_BATCH_BUCKETS,
            registry=r,
        )
        self.batch_duration = Histogram(
            "cartag_inference_batch_duration_seconds",
            "Wall time of one model call.",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.fixes = Counter(
            "cartag_fixes",
            "Fix requests applied (PUT /v1/images/{key}/fix; each one, a correction of a "
            "correction too), by advertiser (the most active; the rest are 'other') and "
            "scope. Not a fix rate's numerator: see cartag_fixed_images_total.",
            ["advertiser", "scope"],
            registry=r,
        )
        self.fixed_images = Counter(
            "cartag_fixed_images",
            "Images fixed in an advertiser's name, each counted once per advertiser and UTC "
            "day however many fix requests it took (the monitor's count), by advertiser (the "
            "same ranking as cartag_advertiser_images_total): their ratio is its fix rate.",
            ["advertiser"],
            registry=r,
        )
        self.model_info = Gauge(
            "cartag_model_info",
            "The model version in service and the backbone it runs on (value 1; the backbone "
            "id ends +int8@<digest> when the int8 one serves).",
            ["version", "backbone"],
            registry=r,
        )
        self.int8_unavailable = Gauge(
            "cartag_int8_unavailable",
            "1 while the model in service ships an int8 backbone that the settings ask for but "
            "this machine cannot use, so fp32 serves (about half the backbone throughput; the "
            "log says why). No series: int8 serves, or was not asked for.",
            ["version"],
            registry=r,
        )
        self.model_fallback_info = Gauge(
            "cartag_model_fallback",
            "1 while the production model cannot serve here: 'wanted' is the version the "
            "production alias names, 'serving' the one answering instead (the last version "
            "that loaded, else the bundled model). No series: production is served.",
            ["wanted", "serving"],
            registry=r,
        )
        self.model_host_failures_info = Gauge(
            "cartag_model_host_load_failures",
            "Tries in a row that the model the production alias names ('version') failed to "
            "load here for a reason of this host (an I/O error, its folder missing: a lost "
            "mount, memory running out), not of its files: it is not refused, other hosts "
            "may serve it, and this one tries again. No series: none pending.",
            ["version"],
            registry=r,
        )
        self.storage_errors = Counter(
            "cartag_storage_errors",
            "Writes that failed because the store is full, read-only or unreachable, by "
            "operation (request: answered 503; revalidation: cached answers served anyway).",
            ["operation"],
            registry=r,
        )
        self._queues = _ScrapedGauge(
            "cartag_queue_depth", "Items waiting, by queue (read at scrape time)."
        )
        self._queue_ages = _ScrapedGauge(
            "cartag_queue_oldest_age_seconds",
            "Seconds the oldest item of a queue has waited to start (0: none waits; read at "
            "scrape time).",
        )
        r.register(self._queues)
        r.register(self._queue_ages)
        self._drift = _DriftCollector()
        r.register(self._drift)
        self._lock = threading.Lock()
        self._hits = 0
        self._misses = 0

    # --- exposition ----------------------------------------------------------------

    def exposition(self) -> tuple[bytes, str]:
        """The registry in the Prometheus text format, and its content type."""
        return generate_latest(self.registry), CONTENT_TYPE_LATEST

    def add_queue_source(self, read: Callable[[], dict[str, float]]) -> None:
        """Report ``read()`` (queue name → depth) as ``cartag_queue_depth`` at every scrape."""
        self._queues.add(read)

    def add_queue_age_source(self, read: Callable[[], dict[str, float]]) -> None:
        """Report ``read()`` (queue name → seconds the oldest item waited) at every scrape."""
        self._queue_ages.add(read)

    def set_drift_source(self, read: Callable[[], DriftValues]) -> None:
        """Report ``read()`` (gauge name → {(version, advertiser): value}) as the drift
        gauges at every scrape."""
        self._drift.set(read)

    # --- Telemetry -------------------------------------------------------------------

    def request_finished(self, method: str, route: str, status: int, duration_s: float) -> None:
        self.requests.labels(route, method, str(status)).inc()
        self.latency.labels(route, method).observe(duration_s)

    def images_answered(self, results: Sequence[AnsweredImage]) -> None:
        # Counted first, then one increment per label set: a labels() lookup per image
        # was most of a cached answer's telemetry.
        answered = collections.Counter((r.status, r.source or "none") for r in results)
        skipped = collections.Counter(
            r.reason or "unknown" for r in results if r.status == "skipped"
        )
        for (status, source), count in answered.items():
            self.images.labels(status, source).inc(count)
        for reason, count in skipped.items():
            self.skipped.labels(reason).inc(count)
        hits = sum(count for (status, _), count in answered.items() if status == "cached")
        misses = len(results) - hits - sum(skipped.values())
        versions = collections.Counter(
            (r.model_version or "unknown", r.status) for r in results if r.status != "skipped"
        )
        for (version, status), count in versions.items():
            self.model_answers.labels(version, status).inc(count)
        self.request_images.observe(len(results))
        if hits:
            self.cache_lookups.labels("hit").inc(hits)
        if misses:
            self.cache_lookups.labels("miss").inc(misses)
        with self._lock:
            self._hits += hits
            self._misses += misses
            total = self._hits + self._misses
            if total:
                self.cache_hit_ratio.set(self._hits / total)

    def download_failed(self, reason: str, host: str) -> None:
        self.download_failures.labels(reason, self._hosts.label(host)).inc()

    def batch_ran(self, size: int, duration_s: float) -> None:
        self.batch_size.observe(size)
        self.batch_duration.observe(duration_s)

    def fix_applied(self, advertiser_id: str, scope: str) -> None:
        self.fixes.labels(self._advertisers.label(advertiser_id), scope).inc()

    def image_fixed(self, advertiser_id: str) -> None:
        self.fixed_images.labels(self._advertisers.label(advertiser_id)).inc()

    def advertiser_answered(self, advertiser_id: str, answered: int) -> None:
        if answered > 0:
            self.advertiser_images.labels(self._advertisers.label(advertiser_id)).inc(answered)

    def model_loaded(
        self, version: str, backbone: str | None = None, int8_problem: str | None = None
    ) -> None:
        # One version at a time: a hot swap replaces the series rather than adding one.
        self.model_info.clear()
        self.model_info.labels(version, backbone or "").set(1)
        self.int8_unavailable.clear()
        if int8_problem:
            self.int8_unavailable.labels(version).set(1)

    def model_fallback(self, wanted: str | None, serving: str) -> None:
        self.model_fallback_info.clear()
        if wanted is not None:
            self.model_fallback_info.labels(wanted, serving).set(1)

    def model_host_failures(self, version: str | None, tries: int = 0) -> None:
        self.model_host_failures_info.clear()
        if version is not None:
            self.model_host_failures_info.labels(version).set(tries)

    def storage_failed(self, operation: str) -> None:
        self.storage_errors.labels(operation).inc()
