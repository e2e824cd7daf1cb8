"""GET /v1/advertisers and ``cartag advertisers list`` with many advertisers: size and time.

Builds a throw-away SQLite store with ``--advertisers`` advertisers (the store of
:mod:`benchmarks.fix_index`: two images each, one override in ten), then times, best of
``--repeats``, the API listing with an admin key (its default page, a search by id and a
later page) and the command line's listing run as a process (its default page). Before the
listing had pages, both answered every advertiser at once: the API a 20,000-element JSON
array, the command a 20,000-row table.

Usage::

    .venv/bin/python -m benchmarks.advertisers_api [--advertisers 20000] [--repeats 5]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

from benchmarks.fix_index import NOW, seed
from cartag.api.app import create_app
from cartag.models.classifier import load_classifier
from cartag.settings import Settings
from cartag.store import apikeys
from cartag.store.db import Database, upgrade


def _api(settings: Settings, db: Database, count: int, repeats: int) -> None:
    with warnings.catch_warnings():
        # Starlette's nudge towards httpx2, which the tests ignore too.
        warnings.filterwarnings("ignore", "Using `httpx` with `starlette.testclient`")
        from fastapi.testclient import TestClient
    with db.write() as session:
        _, key = apikeys.create_key(session, name="admin", roles=["admin"], now=NOW)
    headers = {"Authorization": f"Bearer {key}"}
    app = create_app(settings, db=db, classifier=load_classifier(settings), run_jobs=False)
    with TestClient(app) as client:
        print(f"GET /v1/advertisers as admin, {count} advertisers (best of {repeats}):")
        for name, path in (
            ("default", "/v1/advertisers"),
            ("search q=dealer-1234", "/v1/advertisers?q=dealer-1234"),
            ("page 100", "/v1/advertisers?page=100"),
        ):
            fastest, size, status = float("inf"), 0, 0
            for _ in range(repeats):
                started = time.perf_counter()
                answer = client.get(path, headers=headers)
                fastest = min(fastest, time.perf_counter() - started)
                size, status = len(answer.content), answer.status_code
            body = answer.json()
            shown = len(body) if isinstance(body, list) else len(body.get("items", []))
            print(
                f"  {name}: HTTP {status}, {fastest * 1000:.0f} ms, {size / 1000:.1f} KB, "
                f"{shown} advertisers in the answer"
            )


def _cli(data_dir: Path, repeats: int) -> None:
    env = {**os.environ, "CARTAG_DATA_DIR": str(data_dir), "COLUMNS": "120"}
    command = [str(Path(sys.executable).with_name("cartag")), "advertisers", "list"]
    fastest, size = float("inf"), 0
    for _ in range(repeats):
        started = time.perf_counter()
        done = subprocess.run(command, env=env, capture_output=True, check=True)
        fastest = min(fastest, time.perf_counter() - started)
        size = len(done.stdout)
    rows = sum(1 for line in done.stdout.decode().splitlines() if "dealer-" in line)
    print(
        f"cartag advertisers list (a process, best of {repeats}): {fastest * 1000:.0f} ms, "
        f"{size / 1000:.1f} KB of output, {rows} advertiser rows"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--advertisers", type=int, default=20_000)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        settings = Settings(data_dir=Path(tmp) / "data")
        db = Database(settings.resolved_database_url)
        upgrade(db)
        seed(db, args.advertisers)
        _api(settings, db, args.advertisers, args.repeats)
        db.dispose()
        _cli(settings.data_dir, min(args.repeats, 3))


if __name__ == "__main__":
    main()
