"""Shared fixtures. Factories live in tests/support as plain functions."""

from __future__ import annotations

from pathlib import Path

import pytest

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "vcr-train"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The folder of real, color-labelled car photos (../shared/data/vcr-train)."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real images not found at {SHARED_DATA}")
    return SHARED_DATA
