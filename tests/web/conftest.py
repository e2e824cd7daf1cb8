"""Fixtures of the browser tests."""

from __future__ import annotations

import pytest

from tests.support.live_server import find_chromium


@pytest.fixture
def chromium() -> str:
    """Debian's chromium (skipped when absent, except under CI=true)."""
    return find_chromium()
