"""A real uvicorn server on a free port, and the headless Chromium that drives the pages."""

from __future__ import annotations

import os
import shutil
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import uvicorn
from fastapi import FastAPI

CHROMIUM = os.environ.get("CARTAG_TEST_CHROMIUM", "/usr/bin/chromium")


def chromium_path() -> str:
    """The browser to drive; skips the test when absent, except in CI where it must be there."""
    found = CHROMIUM if Path(CHROMIUM).is_file() else shutil.which(CHROMIUM)
    if found:
        return found
    message = (
        f"chromium not found at {CHROMIUM}: install Debian's chromium "
        "(`bash scripts/setup.sh dev` as root does) or set CARTAG_TEST_CHROMIUM"
    )
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"CI=true but {message}")
    pytest.skip(message)


@contextmanager
def live_server(app: FastAPI) -> Iterator[str]:
    """Serve ``app`` with uvicorn (its lifespan included) in a thread; yields its base URL."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)
        sock.close()
