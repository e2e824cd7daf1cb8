"""A reading of this process's Prometheus registry, for the operational panels of /monitor.

The figures are this process's since it started (what ``/metrics`` would show), folded
into what a person reads: per route the requests, errors and latency percentiles
(estimated from the histogram's buckets the way PromQL's ``histogram_quantile`` does),
skip reasons, cache hits, answers per model version, queues. Over time and across
processes the same metrics are Prometheus' and Grafana's (``ops/``).
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry

LATENCY = "cartag_http_request_duration_seconds"


@dataclass(frozen=True)
class RouteStats:
    """One route template and method: requests answered, errors, latency in seconds."""

    route: str
    method: str
    requests: int
    client_errors: int
    server_errors: int
    mean_s: float | None
    p50_s: float | None
    p95_s: float | None
    p99_s: float | None


@dataclass
class Snapshot:
    """What the process's metrics say now (counts since it started)."""

    routes: list[RouteStats] = field(default_factory=list)
    images: dict[str, int] = field(default_factory=dict)
    skipped: dict[str, int] = field(default_factory=dict)
    download_failures: dict[str, int] = field(default_factory=dict)
    cache_hits: int = 0
    cache_misses: int = 0
    model_answers: dict[str, dict[str, int]] = field(default_factory=dict)
    queues: dict[str, float] = field(default_factory=dict)
    queue_ages: dict[str, float] = field(default_factory=dict)
    batches: int = 0
    batch_images: float = 0.0
    batch_seconds: float = 0.0
    storage_errors: dict[str, int] = field(default_factory=dict)
    serving: str | None = None
    fallback: tuple[str, str] | None = None

    @property
    def requests(self) -> int:
        return sum(r.requests for r in self.routes)

    @property
    def server_errors(self) -> int:
        return sum(r.server_errors for r in self.routes)

    @property
    def answered(self) -> int:
        return sum(self.images.values())

    @property
    def skip_rate(self) -> float | None:
        total = self.answered
        return sum(self.skipped.values()) / total if total else None

    @property
    def cache_hit_rate(self) -> float | None:
        total = self.cache_hits + self.cache_misses
        return self.cache_hits / total if total else None


def quantile(q: float, buckets: Sequence[tuple[float, float]]) -> float | None:
    """The ``q`` quantile of a histogram, as PromQL's ``histogram_quantile`` estimates it.

    Args:
        q: 0 to 1.
        buckets: ``(upper bound, cumulative count)`` pairs; the last bound is +Inf.

    Returns:
        Linear interpolation within the bucket that holds the rank; the highest finite
        bound when it falls in the +Inf bucket; None without observations.
    """
    ordered = sorted(buckets)
    if not ordered or ordered[-1][1] <= 0:
        return None
    rank = q * ordered[-1][1]
    lower, below = 0.0, 0.0
    for upper, count in ordered:
        if count >= rank:
            if math.isinf(upper):
                return lower
            if count == below:
                return upper
            return lower + (upper - lower) * (rank - below) / (count - below)
        lower, below = upper, count
    return lower


def _int(value: float) -> int:
    return int(round(value))


def read(registry: CollectorRegistry) -> Snapshot:
    """Fold the registry's current samples into a :class:`Snapshot`."""
    snap = Snapshot()
    statuses: dict[tuple[str, str], dict[str, int]] = defaultdict(lambda: defaultdict(int))
    buckets: dict[tuple[str, str], list[tuple[float, float]]] = defaultdict(list)
    sums: dict[tuple[str, str], float] = defaultdict(float)
    models: dict[str, dict[str, int]] = defaultdict(dict)
    for family in registry.collect():
        for sample in family.samples:
            name, labels, value = sample.name, sample.labels, sample.value
            if name == "cartag_http_requests_total":
                statuses[(labels["route"], labels["method"])][labels["status"]] += _int(value)
            elif name == f"{LATENCY}_bucket":
                key = (labels["route"], labels["method"])
                buckets[key].append((float(labels["le"]), value))
            elif name == f"{LATENCY}_sum":
                sums[(labels["route"], labels["method"])] = value
            elif name == "cartag_images_total":
                snap.images[labels["status"]] = snap.images.get(labels["status"], 0) + _int(value)
            elif name == "cartag_images_skipped_total":
                snap.skipped[labels["reason"]] = _int(value)
            elif name == "cartag_download_failures_total":
                reason = labels["reason"]
                snap.download_failures[reason] = snap.download_failures.get(reason, 0) + _int(value)
            elif name == "cartag_cache_lookups_total":
                if labels["result"] == "hit":
                    snap.cache_hits = _int(value)
                else:
                    snap.cache_misses = _int(value)
            elif name == "cartag_model_answers_total":
                models[labels["version"]][labels["status"]] = _int(value)
            elif name == "cartag_queue_depth":
                snap.queues[labels["queue"]] = value
            elif name == "cartag_queue_oldest_age_seconds":
                snap.queue_ages[labels["queue"]] = value
            elif name == "cartag_inference_batch_size_count":
                snap.batches = _int(value)
            elif name == "cartag_inference_batch_size_sum":
                snap.batch_images = value
            elif name == "cartag_inference_batch_duration_seconds_sum":
                snap.batch_seconds = value
            elif name == "cartag_storage_errors_total":
                snap.storage_errors[labels["operation"]] = _int(value)
            elif name == "cartag_model_info" and value == 1:
                snap.serving = labels["version"]
            elif name == "cartag_model_fallback" and value == 1:
                snap.fallback = (labels["wanted"], labels["serving"])
    for key, codes in statuses.items():
        total = sum(codes.values())
        count = max((c for le, c in buckets.get(key, []) if math.isinf(le)), default=0.0)
        snap.routes.append(
            RouteStats(
                route=key[0],
                method=key[1],
                requests=total,
                client_errors=sum(n for code, n in codes.items() if code.startswith("4")),
                server_errors=sum(n for code, n in codes.items() if code.startswith("5")),
                mean_s=sums[key] / count if count else None,
                p50_s=quantile(0.5, buckets.get(key, [])),
                p95_s=quantile(0.95, buckets.get(key, [])),
                p99_s=quantile(0.99, buckets.get(key, [])),
            )
        )
    snap.routes.sort(key=lambda r: (-r.requests, r.route, r.method))
    snap.skipped = dict(sorted(snap.skipped.items(), key=lambda kv: (-kv[1], kv[0])))
    snap.model_answers = {v: dict(models[v]) for v in sorted(models)}
    return snap
