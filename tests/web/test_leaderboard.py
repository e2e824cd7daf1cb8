"""The leaderboard's HTML report: self-contained, written under ``<data_dir>/reports``."""

from __future__ import annotations

import datetime as dt
import re

from cartag.settings import Settings
from cartag.web.leaderboard import render_html, write_leaderboard
from tests.support.leaderboard import make_board


def test_html_report_is_self_contained(settings: Settings) -> None:
    board = make_board(settings)
    html = render_html(board, now=dt.datetime(2026, 12, 2, tzinfo=dt.UTC))
    assert html.count("<svg") == 3  # type + color on the test set, type on the advertiser set
    assert html.count("data:image/png;base64,") == 3 + 3 + 3  # a confusion matrix per model/task
    assert "recall of Stock drops" in html and "sweep-2026.12.02-0000000001" in html
    # Nothing is fetched from elsewhere.
    assert not re.search(r"""(src|href)=["']?https?:""", html)
    path = write_leaderboard(board, settings, now=dt.datetime(2026, 12, 2, tzinfo=dt.UTC))
    assert path == settings.data_dir / "reports" / "cars@3_sweep-abc.html"
    assert path.read_text(encoding="utf-8") == html
