"""Fixtures of the pipeline tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.http_server import ImageServer


@pytest.fixture
def server() -> Iterator[ImageServer]:
    """A local image server; a test fails if the server hit an error while serving."""
    with ImageServer() as srv:
        yield srv
        assert srv.errors == []
