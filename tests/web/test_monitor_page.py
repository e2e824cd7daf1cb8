"""The monitor page renderer: escaping, flagged rows, the row cap, an empty report."""

from __future__ import annotations

import datetime as dt

from cartag.deploy.monitor import Thresholds, build_report
from cartag.store.db import Database
from cartag.web.monitor_page import render_login, render_monitor
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
