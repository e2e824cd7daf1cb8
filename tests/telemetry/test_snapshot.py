"""Reading a registry for /monitor: latency percentiles from buckets, errors, skips, queues."""

from __future__ import annotations

import math

import pytest

from cartag.pipeline.results import ClassifyResult, skipped
from cartag.telemetry.prometheus import PrometheusTelemetry
from cartag.telemetry.snapshot import Snapshot, quantile, read

INF = math.inf


def test_quantiles_interpolate_within_the_bucket_like_histogram_quantile() -> None:
    buckets = [(0.1, 2.0), (0.5, 6.0), (INF, 8.0)]
    assert quantile(0.1, buckets) == pytest.approx(0.04)  # rank 0.8 of the first 2
    assert quantile(0.5, buckets) == pytest.approx(0.3)  # rank 4: halfway through (0.1, 0.5]
    assert quantile(0.99, buckets) == 0.5  # in +Inf: the highest finite bound
    assert quantile(0.5, list(reversed(buckets))) == pytest.approx(0.3)  # any order
    assert quantile(0.5, [(0.1, 0.0), (INF, 0.0)]) is None
    assert quantile(0.5, []) is None


def test_a_snapshot_of_requests_answers_queues_and_the_model() -> None:
    t = PrometheusTelemetry()
    for duration in (0.004, 0.004, 0.03, 0.3):
        t.request_finished("POST", "/v1/classify", 200, duration)
    t.request_finished("POST", "/v1/classify", 503, 0.02)
    t.request_finished("GET", "/v1/images/{image_key}", 404, 0.002)
    t.images_answered(
        [
            ClassifyResult("u1", "k1", "classified", "Dealer", "Red", model_version="v2"),
            ClassifyResult("u2", "k2", "cached", "Dealer", "Red", model_version="v1"),
            skipped("u3", "http_404"),
            skipped("u4", "http_404"),
            skipped("u5", "too_large"),
        ]
    )
    t.download_failed("http_404", "a.example")
    t.download_failed("http_404", "b.example")
    t.batch_ran(4, 0.2)
    t.batch_ran(2, 0.1)
    t.model_loaded("v2")
    t.model_fallback("v3", "v2")
    t.storage_failed("revalidation")
    t.add_queue_source(lambda: {"jobs": 2.0})
    t.add_queue_age_source(lambda: {"jobs": 75.0})

    snap = read(t.registry)
    classify, image = snap.routes
    assert (classify.route, classify.method, classify.requests) == ("/v1/classify", "POST", 5)
    assert (classify.client_errors, classify.server_errors) == (0, 1)
    # Rank 2.5 of 5 falls in (0.01, 0.025], which holds the 3rd observation only.
    assert classify.p50_s == pytest.approx(0.01 + 0.015 * (2.5 - 2) / (3 - 2))
    assert classify.p99_s is not None and 0.25 < classify.p99_s <= 0.5
    assert classify.mean_s == pytest.approx((0.004 * 2 + 0.03 + 0.3 + 0.02) / 5)
    assert (image.route, image.client_errors) == ("/v1/images/{image_key}", 1)
    assert (snap.requests, snap.server_errors) == (6, 1)
    assert snap.images == {"classified": 1, "cached": 1, "skipped": 3}
    assert snap.skipped == {"http_404": 2, "too_large": 1}  # most frequent first
    assert snap.skip_rate == pytest.approx(3 / 5)
    assert snap.download_failures == {"http_404": 2}
    assert (snap.cache_hits, snap.cache_misses, snap.cache_hit_rate) == (1, 1, 0.5)
    assert snap.model_answers == {"v1": {"cached": 1}, "v2": {"classified": 1}}
    assert (snap.queues, snap.queue_ages) == ({"jobs": 2.0}, {"jobs": 75.0})
    assert (snap.batches, snap.batch_images, snap.batch_seconds) == (2, 6.0, pytest.approx(0.3))
    assert snap.storage_errors == {"revalidation": 1}
    assert (snap.serving, snap.fallback) == ("v2", ("v3", "v2"))


def test_an_empty_registry_reads_as_nothing() -> None:
    snap = read(PrometheusTelemetry().registry)
    assert snap == Snapshot()
    assert (snap.requests, snap.skip_rate, snap.cache_hit_rate) == (0, None, None)
