"""Settings refuse values the service would choke on later (found by a sweep of every one)."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError
from typer.testing import CliRunner

from cartag.cli import app
from cartag.settings import Settings


@pytest.mark.parametrize(
    ("name", "value", "words"),
    [
        # Infinity overflowed the batcher's wait: every classify hung, and shutdown too.
        ("max_batch_delay_ms", "inf", "finite"),
        ("max_batch_delay_ms", "1e300", "less than or equal"),
        # An HTTP header: non-ASCII failed the startup, a line break every download.
        ("user_agent", "caré", "printable ASCII"),
        ("user_agent", "a\r\nX-Evil: 1", "printable ASCII"),
        ("redis_cache_url", "http://x", "not a Redis URL"),
        ("monitor_recent_days", "1000000", "less than or equal"),
        ("monitor_baseline_days", "1000000", "less than or equal"),
        ("drift_current_days", "1000000", "less than or equal"),
        ("drift_baseline_days", "1000000", "less than or equal"),
        ("model_poll_s", "1e-300", "greater than or equal"),
        # NaN or 5 passed every candidate through the gate; -1 failed them all.
        ("gate_recall_tolerance_by_field", "color=nan", "0 to 1"),
        ("gate_recall_tolerance_by_field", "color=5", "0 to 1"),
        ("gate_recall_tolerance_by_field", "color=-1", "0 to 1"),
        ("gate_recall_tolerance_by_field", "colour=0.0", "image_type=T or color=T"),
        ("gate_recall_tolerance_by_field", "color=abc", "not a number"),
        # Never matched a host, so the setting silently did nothing.
        ("content_hash_hosts", "https://cdn.example.com/", "not a host name"),
        ("content_hash_hosts", "cdn.example.com:443", "not a host name"),
        ("content_hash_hosts", '["a.com"]', "not a host name"),
        ("broker_url", "garbage", "not a broker URL"),
    ],
)
def test_bad_values_are_refused(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str, words: str
) -> None:
    monkeypatch.setenv(f"CARTAG_{name.upper()}", value)
    with pytest.raises(ValidationError) as caught:
        Settings()
    [error] = caught.value.errors()
    assert error["loc"] == (name,)
    assert words in error["msg"]


@pytest.mark.parametrize(
    ("name", "value", "expected"),
    [
        (
            "gate_recall_tolerance_by_field",
            "color=0.05, image_type=0",
            {"color": 0.05, "image_type": 0},
        ),
        (
            "content_hash_hosts",
            "CDN.example.com,*.img.example.org",
            ["cdn.example.com", "*.img.example.org"],
        ),
        ("redis_cache_url", "rediss://cache:6380/1", "rediss://cache:6380/1"),
        ("redis_cache_url", "", None),
        ("callback_secret", " ", None),  # blank signed every callback with a space
        ("data_dir", "", Path("cartag-data")),  # empty meant the current directory
        ("model_dir", "", None),
        ("cache_dir", " ", None),
    ],
)
def test_good_and_blank_values(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str, expected: object
) -> None:
    monkeypatch.setenv(f"CARTAG_{name.upper()}", value)
    assert getattr(Settings(), name) == expected


def test_the_cli_names_the_setting(tmp_path: Path) -> None:
    env = {"CARTAG_DATA_DIR": str(tmp_path), "CARTAG_MAX_BATCH_DELAY_MS": "inf"}
    result = CliRunner().invoke(app, ["db", "check"], env=env)
    assert result.exit_code == 2
    assert "CARTAG_MAX_BATCH_DELAY_MS=inf" in result.output and "Traceback" not in result.output
