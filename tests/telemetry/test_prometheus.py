"""Prometheus telemetry: bounded labels, per-instance registries, what each call records."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

from cartag.pipeline.results import ClassifyResult, skipped
from cartag.telemetry import Telemetry, host_of
from cartag.telemetry.prometheus import OTHER, PrometheusTelemetry, TopLabels


def _samples(
    telemetry: PrometheusTelemetry,
) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    body, content_type = telemetry.exposition()
    assert content_type.startswith("text/plain")
    out = {}
    for family in text_string_to_metric_families(body.decode()):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


def test_top_labels_keep_frequent_values_and_bound_the_rest() -> None:
    labels = TopLabels(top_n=2)
    for _ in range(5):
        assert labels.label("big.example") == "big.example"
    assert labels.label("second.example") == "second.example"
    # A third host is not in the top two while it is rarer than both.
    assert labels.label("third.example") == OTHER
    # However many one-off hosts come, at most max_series values ever get their own series.
    given = {labels.label(f"h{i}.example") for i in range(500)} - {OTHER}
    assert len(given | {"big.example", "second.example"}) <= labels.max_series == 4
    assert TopLabels(top_n=0).label("x") == OTHER


def test_top_labels_admit_a_host_that_becomes_frequent() -> None:
    labels = TopLabels(top_n=1)
    labels.label("early.example")
    for _ in range(3):
        labels.label("busy.example")
    assert labels.label("busy.example") == "busy.example"
    assert labels.label("early.example") == OTHER


def test_host_of() -> None:
    assert host_of("https://CDN.Example:8443/a.jpg") == "cdn.example"
    assert host_of("not a url") == "invalid"
    assert host_of("http://[::1/") == "invalid"


def test_registries_are_per_instance() -> None:
    a, b = PrometheusTelemetry(), PrometheusTelemetry()
    a.fix_applied("dealer-1", "global")
    assert (
        _samples(a)[("cartag_fixes_total", (("advertiser", "dealer-1"), ("scope", "global")))] == 1
    )
    assert not any(name == "cartag_fixes_total" for name, _ in _samples(b))


def test_answers_failures_batches_and_model() -> None:
    t = PrometheusTelemetry(top_hosts=1)
    results = [
        ClassifyResult(
            "u1", "k1", "classified", "Dealer", "Red", source="model", model_version="v2"
        ),
        ClassifyResult("u2", "k2", "cached", "Dealer", "Red", source="cache", model_version="v1"),
        ClassifyResult("u3", "k3", "cached", "Stock", "Red", source="override", model_version="v1"),
        skipped("u4", "http_404"),
    ]
    t.images_answered(results)
    t.advertiser_answered("dealer-1", 3)
    t.advertiser_answered("dealer-1", 0)
    t.download_failed("http_404", "a.example")
    t.download_failed("timeout", "a.example")
    t.download_failed("timeout", "b.example")
    t.batch_ran(8, 0.2)
    t.batch_ran(3, 0.1)
    t.model_loaded("v1")
    t.model_loaded("v2", "lite0+int8@abcd")
    t.request_finished("GET", "/v1/jobs/{job_id}", 200, 0.01)
    s = _samples(t)
    assert s[("cartag_images_total", (("source", "model"), ("status", "classified")))] == 1
    assert s[("cartag_images_total", (("source", "none"), ("status", "skipped")))] == 1
    assert s[("cartag_images_skipped_total", (("reason", "http_404"),))] == 1
    # Per model version (a cached answer keeps its version), per advertiser (fix-rate base).
    assert s[("cartag_model_answers_total", (("status", "classified"), ("version", "v2")))] == 1
    assert s[("cartag_model_answers_total", (("status", "cached"), ("version", "v1")))] == 2
    assert s[("cartag_advertiser_images_total", (("advertiser", "dealer-1"),))] == 3
    assert s[("cartag_cache_lookups_total", (("result", "hit"),))] == 2
    assert s[("cartag_cache_lookups_total", (("result", "miss"),))] == 1
    assert s[("cartag_cache_hit_ratio", ())] == 2 / 3
    assert s[("cartag_classify_images_count", ())] == 1
    assert (
        s[("cartag_download_failures_total", (("host", "a.example"), ("reason", "timeout")))] == 1
    )
    assert s[("cartag_download_failures_total", (("host", OTHER), ("reason", "timeout")))] == 1
    assert s[("cartag_inference_batch_size_sum", ())] == 11
    assert s[("cartag_inference_batch_size_count", ())] == 2
    assert not [key for key in s if key[0] == "cartag_model_info" and ("version", "v1") in key[1]]
    assert s[("cartag_model_info", (("backbone", "lite0+int8@abcd"), ("version", "v2")))] == 1
    key = (
        "cartag_http_requests_total",
        (("method", "GET"), ("route", "/v1/jobs/{job_id}"), ("status", "200")),
    )
    assert s[key] == 1


def test_queue_sources_are_read_at_scrape_time() -> None:
    t = PrometheusTelemetry()
    depth = {"jobs": 1.0}
    t.add_queue_source(lambda: dict(depth))
    assert _samples(t)[("cartag_queue_depth", (("queue", "jobs"),))] == 1
    depth["jobs"] = 4.0
    assert _samples(t)[("cartag_queue_depth", (("queue", "jobs"),))] == 4

    def broken() -> dict[str, float]:
        raise RuntimeError("database down")

    t.add_queue_source(broken)
    t.add_queue_source(lambda: {"celery": 2.0})
    t.add_queue_age_source(lambda: {"jobs": 90.0})
    t.add_queue_age_source(broken)
    samples = _samples(t)
    assert samples[("cartag_queue_depth", (("queue", "jobs"),))] == 4
    assert samples[("cartag_queue_depth", (("queue", "celery"),))] == 2
    assert samples[("cartag_queue_oldest_age_seconds", (("queue", "jobs"),))] == 90


def test_the_base_telemetry_does_nothing() -> None:
    base = Telemetry()
    base.images_answered([skipped("u", "timeout")])
    base.download_failed("timeout", "h")
    base.batch_ran(1, 0.1)
    base.fix_applied("a", "global")
    base.image_fixed("a")
    base.advertiser_answered("a", 3)
    base.model_loaded("v")
    base.request_finished("GET", "/", 200, 0.1)


def test_an_unusable_int8_backbone_is_a_series_until_a_model_serves_without_one() -> None:
    t = PrometheusTelemetry()
    t.model_loaded("v1", "lite0", int8_problem="this CPU has no VNNI")
    assert _samples(t)[("cartag_int8_unavailable", (("version", "v1"),))] == 1
    t.model_loaded("v2", "lite0+int8@abcd")
    assert not [key for key in _samples(t) if key[0] == "cartag_int8_unavailable"]


def test_fix_requests_and_fixed_images_are_two_counters_on_one_ranking() -> None:
    t = PrometheusTelemetry(top_advertisers=1)
    t.advertiser_answered("dealer-1", 10)
    t.fix_applied("dealer-1", "advertiser")
    t.fix_applied("dealer-1", "advertiser")
    t.image_fixed("dealer-1")
    t.image_fixed("dealer-2")  # not among the most active: its fix rate is "other"'s
    s = _samples(t)
    assert s[("cartag_fixes_total", (("advertiser", "dealer-1"), ("scope", "advertiser")))] == 2
    assert s[("cartag_fixed_images_total", (("advertiser", "dealer-1"),))] == 1
    assert s[("cartag_fixed_images_total", (("advertiser", OTHER),))] == 1
    assert s[("cartag_advertiser_images_total", (("advertiser", "dealer-1"),))] == 10
