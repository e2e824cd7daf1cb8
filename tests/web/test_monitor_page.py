"""The monitor page renderer: escaping, flagged rows, the row cap, an empty report, the
operational panels."""

from __future__ import annotations

import datetime as dt
import re

from cartag.deploy.drift import DriftThresholds, build_drift
from cartag.deploy.monitor import Thresholds, build_report
from cartag.deploy.operations import build_ops
from cartag.pipeline.results import ClassifyResult, skipped
from cartag.store.db import Database
from cartag.telemetry.prometheus import PrometheusTelemetry
from cartag.telemetry.snapshot import read
from cartag.web.monitor_page import render_login, render_monitor
from tests.support.drift import START, day_answers, seed_days, week
from tests.support.monitoring import TODAY, seed_monitoring

GENERATED = dt.datetime(2026, 11, 26, 16, 0, tzinfo=dt.UTC)


def test_page_caps_rows_and_keeps_flagged_ones(sqlite_db: Database) -> None:
    seed_monitoring(sqlite_db)
    with sqlite_db.read() as session:
        report = build_report(
            session, since=TODAY - dt.timedelta(days=3), until=TODAY, thresholds=Thresholds()
        )
    html = render_monitor(report, since_text="3d", generated=GENERATED, max_rows=2)
    assert html.count('<tr class="num jumped">') == 2
    assert "2 more advertisers" in html
    assert "generated 2026-11-26 16:00 UTC" in html
    assert "?since=3d&amp;advertiser=jumpy" in html


def test_empty_report_and_escaping(sqlite_db: Database) -> None:
    with sqlite_db.read() as session:
        report = build_report(
            session,
            since=TODAY,
            until=TODAY,
            thresholds=Thresholds(),
            advertiser="<b>x</b>",
        )
    html = render_monitor(report, since_text="<script>", generated=GENERATED)
    assert "<script>" not in html and "&lt;script&gt;" in html
    assert "<b>x</b>" not in html and "&lt;b&gt;x&lt;/b&gt;" in html
    assert "No answers or fixes in this period." in html
    login = render_login(error="bad <key>", next_url="/monitor?since=7d")
    assert "bad &lt;key&gt;" in login and 'value="/monitor?since=7d"' in login


def test_operational_panels_from_the_store_and_this_process(sqlite_db: Database) -> None:
    seed_monitoring(sqlite_db)
    telemetry = PrometheusTelemetry()
    for status in (200, 200, 500):
        telemetry.request_finished("POST", "/v1/classify", status, 0.04)
    telemetry.images_answered(
        [
            ClassifyResult("u1", "k1", "classified", "Dealer", "Red", model_version="m2"),
            skipped("u2", "http_404"),
            skipped("u3", "not_an_image"),
        ]
    )
    telemetry.model_loaded("m2")
    now = dt.datetime.combine(TODAY, dt.time(15), dt.UTC)
    with sqlite_db.read() as session:
        report = build_report(
            session, since=TODAY - dt.timedelta(days=3), until=TODAY, thresholds=Thresholds()
        )
        ops = build_ops(session, report, now)
    html = render_monitor(
        report, since_text="3d", generated=GENERATED, ops=ops, snapshot=read(telemetry.registry)
    )
    for panel in ("latency", "jobs", "versions", "skips", "cache", "fix-rate", "serving"):
        assert f'id="panel-{panel}"' in html
    row = re.search(
        r"<tr class=\"num errors\"><td><code>/v1/classify</code></td>(.*?)</tr>", html, re.S
    )
    assert row is not None and "<td>3</td>" in row.group(1)  # 3 requests, 1 server error
    assert "2 of 3 images skipped (66.67%)" in html
    assert "http_404" in html and "not_an_image" in html
    assert '<code>m2</code> <span class="badge">serving</span>' in html
    assert "cache hit rate per day" in html
    # Without metrics (another telemetry) the store's panels remain.
    bare = render_monitor(report, since_text="3d", generated=GENERATED, ops=ops, snapshot=None)
    assert 'id="panel-jobs"' in bare and "This app keeps no metrics." in bare


def test_the_drift_panel_flags_the_drifted_advertiser_and_escapes_names(
    sqlite_db: Database,
) -> None:
    today = START + dt.timedelta(days=9)
    odd = "<b>dealer</b>"
    for adv in ("calm", odd):
        seed_days(sqlite_db, adv, week(), day_answers(60, "m1"))
    seed_days(sqlite_db, "calm", [today], day_answers(60, "m1"))
    seed_days(sqlite_db, odd, [today], day_answers(60, "m1", far_share=0.5))
    with sqlite_db.read() as session:
        report = build_report(session, since=today, until=today, thresholds=Thresholds())
        drift = build_drift(session, until=today, thresholds=DriftThresholds())
    html = render_monitor(report, since_text="1d", generated=GENERATED, drift=drift)
    assert 'id="drift"' in html and 'data-version="m1"' in html
    assert "1 advertiser(s) drifted" in html
    assert html.count('class="num drifted"') == 2  # the version overall, and the advertiser
    assert "&lt;b&gt;dealer&lt;/b&gt;" in html and "<b>dealer</b>" not in html
    assert 'data-advertiser="calm" data-state="ok"' in html
    assert "50.00%" in html and "5.00%" in html  # far share now and in the baseline
    assert "drift" not in render_monitor(report, since_text="1d", generated=GENERATED).lower()
