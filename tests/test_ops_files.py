"""The shipped operations files (ops/): Prometheus alert rules and the Grafana dashboard.

The rules must load as Prometheus rule files and each alert have its parts; every metric,
and every label an expression names, must be one a real cartag app exports on /metrics
after it has classified, skipped, fixed and reported (so that no rule silently watches a
metric that does not exist).
"""

from __future__ import annotations

import ipaddress
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from cartag.api.app import create_app
from cartag.models.classifier import Classifier
from cartag.settings import Settings
from cartag.store import apikeys
from cartag.store.db import Database
from tests.support.db import fresh_database
from tests.support.factories import NOW
from tests.support.http_server import ImageServer
from tests.support.images import jpeg_bytes

pytestmark = pytest.mark.slow

OPS = Path(__file__).resolve().parents[1] / "ops"
RULES = OPS / "prometheus" / "cartag-alerts.yml"
DASHBOARD = OPS / "grafana" / "cartag-dashboard.json"
SUFFIXES = {
    "counter": ("_total", "_created"),
    "histogram": ("_bucket", "_count", "_sum", "_created"),
}
# PromQL's functions and aggregations the files may call.
FUNCTIONS = {
    "sum", "max", "min", "avg", "count", "rate", "increase", "irate", "delta", "deriv",
    "histogram_quantile", "clamp_min", "clamp_max", "vector", "abs", "min_over_time",
    "max_over_time", "avg_over_time", "topk", "bottomk", "absent", "scalar", "time",
}  # fmt: skip
KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "offset", "and",
            "or", "unless", "bool"}  # fmt: skip
DURATION = re.compile(r"^\d+[smhdwy]$")
SELECTOR = re.compile(r"\b(cartag_[a-z0-9_]+)\s*(?:\{([^}]*)\})?")
MATCHER = re.compile(r'\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*(=~|!~|!=|=)\s*"[^"]*"\s*')
GROUPING = re.compile(r"\b(?:by|without|on|ignoring)\s*\(([^)]*)\)")


@pytest.fixture(scope="module")
def exported(
    tmp_path_factory: pytest.TempPathFactory, classifier: Classifier
) -> dict[str, set[str]]:
    """Every sample name a real app exports, with the label names each carries."""
    tmp = tmp_path_factory.mktemp("ops")
    settings = Settings(
        data_dir=tmp / "data",
        allowed_networks=[ipaddress.ip_network("127.0.0.0/8")],
        retries=1,
        retry_backoff_s=0.01,
        monitor_flush_s=0,  # the rollup written at once: the drift gauges read it
    )
    with fresh_database("sqlite", tmp) as db, ImageServer() as server:
        return _scrape(settings, db, classifier, server)


def _scrape(
    settings: Settings, db: Database, classifier: Classifier, server: ImageServer
) -> dict[str, set[str]]:
    with db.write() as session:
        _, key = apikeys.create_key(session, name="ops", roles=["admin"], now=NOW)
    headers = {"Authorization": f"Bearer {key}"}
    server.add_file("/a.jpg", jpeg_bytes(color=(200, 30, 30)))
    server.add_status("/gone.jpg", 404)
    app = create_app(settings, db=db, classifier=classifier, run_jobs=False)
    with TestClient(app) as client:
        body = {
            "advertiser_id": "dealer-1",
            "images": [{"url": server.url("/a.jpg")}, {"url": server.url("/gone.jpg")}],
        }
        for _ in range(2):  # a miss, then a cache hit
            answered = client.post("/v1/classify", json=body, headers=headers)
            assert answered.status_code == 200, answered.text
        image_key = answered.json()["results"][0]["image_key"]
        fixed = client.put(
            f"/v1/images/{image_key}/fix",
            json={
                "advertiser_id": "dealer-1",
                "on_behalf_of": "al",
                "scope": "advertiser",
                # A type too: the solid-color test image is a Placeholder, which has no color.
                "image_type": "Dealer",
                "color": "Blue",
            },
            headers=headers,
        )
        assert fixed.status_code == 200, fixed.text
        # What the app reports on a bad day: a model that cannot serve, a failed write.
        telemetry = client.app.state.cartag.telemetry  # type: ignore[attr-defined]
        telemetry.model_fallback("broken-2", "bundled")
        telemetry.model_host_failures("broken-2", 3)
        telemetry.model_loaded("bundled", "lite0", int8_problem="this CPU has no VNNI")
        telemetry.storage_failed("request")
        text = client.get("/metrics").text
    names: dict[str, set[str]] = {}
    for family in text_string_to_metric_families(text):
        if not family.name.startswith("cartag_"):
            continue
        assert family.samples, f"{family.name} exported no sample: the scrape misses a case"
        for suffix in SUFFIXES.get(family.type, ("",)):
            names.setdefault(family.name + suffix, set())
        for sample in family.samples:
            names.setdefault(sample.name, set()).update(sample.labels)
    return names


def _rules() -> list[dict[str, Any]]:
    loaded = yaml.safe_load(RULES.read_text(encoding="utf-8"))
    assert isinstance(loaded, dict) and set(loaded) == {"groups"}
    rules = []
    for group in loaded["groups"]:
        assert set(group) == {"name", "rules"} and group["rules"], group
        rules += group["rules"]
    return rules


def _dashboard_exprs() -> Iterator[str]:
    dashboard = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    for panel in dashboard["panels"]:
        if panel["type"] == "row":
            continue
        assert panel["targets"], f"panel {panel['title']!r} queries nothing"
        for target in panel["targets"]:
            yield target["expr"]


def _check_expr(expr: str, exported: dict[str, set[str]]) -> None:
    """Brackets balance; functions, durations, metrics and labels are real."""
    depth = {"(": 0, "{": 0, "[": 0}
    closing = {")": "(", "}": "{", "]": "["}
    for char in re.sub(r'"[^"]*"', '""', expr):
        if char in depth:
            depth[char] += 1
        elif char in closing:
            depth[closing[char]] -= 1
            assert depth[closing[char]] >= 0, f"unbalanced {char!r} in {expr}"
    assert all(v == 0 for v in depth.values()), f"unbalanced brackets in {expr}"
    for call in re.findall(r"\b([a-z_]+)\s*\(", re.sub(r'"[^"]*"', '""', expr)):
        assert call in FUNCTIONS | KEYWORDS, f"unknown function {call!r} in {expr}"
    for window in re.findall(r"\[([^\]]+)\]", expr):
        assert all(DURATION.match(part) for part in window.split(":")), window
    for offset in re.findall(r"\boffset\s+([0-9a-z]+)", expr):
        assert DURATION.match(offset), offset
    labels: set[str] = set()
    selectors = SELECTOR.findall(expr)
    assert selectors, f"no cartag metric in {expr}"
    for metric, matchers in selectors:
        assert metric in exported, f"{metric} is not a metric cartag exports ({expr})"
        for matcher in filter(str.strip, matchers.split(",")):
            found = MATCHER.fullmatch(matcher)
            assert found, f"bad label matcher {matcher!r} in {expr}"
            assert found.group(1) in exported[metric], f"{metric} has no label {found.group(1)}"
        labels |= exported[metric]
    for grouping in GROUPING.findall(expr):
        for label in filter(None, (g.strip() for g in grouping.split(","))):
            assert label in labels, f"no metric of {expr!r} has the label {label!r}"


def test_the_alert_rules_parse_and_each_alert_has_its_parts() -> None:
    rules = _rules()
    names = [rule["alert"] for rule in rules]
    assert len(names) == len(set(names)), "alert names must be unique"
    for rule in rules:
        assert set(rule) == {"alert", "expr", "for", "labels", "annotations"}, rule
        assert re.fullmatch(r"Cartag[A-Z][A-Za-z]+", rule["alert"])
        assert isinstance(rule["expr"], str) and rule["expr"].strip()
        assert DURATION.match(rule["for"]), rule["for"]
        assert rule["labels"]["severity"] in {"warning", "critical"}
        assert rule["annotations"]["summary"] and rule["annotations"]["description"]
    # The situations the operators asked to be told about.
    for wanted in (
        "CartagSkipRateSpike",
        "CartagFixRateJump",
        "CartagJobQueueStuck",
        "CartagModelDrift",
        "CartagAdvertiserDrift",
        "CartagModelHostLoadFailing",
    ):
        assert wanted in names


def test_every_metric_and_label_the_rules_name_is_exported(
    exported: dict[str, set[str]],
) -> None:
    for rule in _rules():
        _check_expr(rule["expr"], exported)


def test_the_dashboard_queries_only_exported_metrics(exported: dict[str, set[str]]) -> None:
    dashboard = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    assert dashboard["uid"] and dashboard["templating"]["list"][0]["type"] == "datasource"
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    for panel in dashboard["panels"]:
        grid = panel["gridPos"]
        assert 0 <= grid["x"] and grid["x"] + grid["w"] <= 24, panel["title"]
    seen: set[str] = set()
    for expr in _dashboard_exprs():
        _check_expr(expr, exported)
        seen |= {metric for metric, _ in SELECTOR.findall(expr)}
    # The panels /monitor has are on the dashboard too.
    for metric in (
        "cartag_http_request_duration_seconds_bucket",
        "cartag_http_requests_total",
        "cartag_images_skipped_total",
        "cartag_cache_lookups_total",
        "cartag_queue_depth",
        "cartag_model_answers_total",
    ):
        assert metric in seen, metric


def test_the_checks_catch_a_wrong_metric_label_or_function(exported: dict[str, set[str]]) -> None:
    for bad in (
        "sum(rate(cartag_images_dropped_total[5m]))",
        'sum(rate(cartag_images_total{host="x"}[5m]))',
        "sum by (host) (rate(cartag_images_total[5m]))",
        "rates(cartag_images_total[5m])",
        "sum(rate(cartag_images_total[5x]))",
        "sum(rate(cartag_images_total[5m])",
    ):
        with pytest.raises(AssertionError):
            _check_expr(bad, exported)


def test_the_fix_rate_alert_counts_fixed_images_as_the_monitor_does() -> None:
    """cartag_fixes_total counts requests (a mis-click corrected counts twice); the
    monitor's rate, which the alert copies, counts each image once per advertiser and day."""
    [rule] = [r for r in _rules() if r.get("alert") == "CartagFixRateJump"]
    assert "cartag_fixed_images_total" in rule["expr"]
    assert "cartag_fixes_total" not in rule["expr"]
