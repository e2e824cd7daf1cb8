"""Scale-out end to end: the API and two ``cartag worker`` processes on PostgreSQL + Redis.

An inventory of real photos is submitted as a job; one worker is killed (SIGKILL) in
the middle of a chunk; the other finishes the job. Every item ends with exactly one
result and every image was classified (stored by the model) exactly once.
"""

from __future__ import annotations

import hashlib
import os
import re
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import create_engine, select, text

from cartag.store import apikeys
from cartag.store import jobs as job_repo
from cartag.store.db import Database, upgrade
from cartag.store.tables import ImageRow
from tests.support.db import PG_URL, require_postgres
from tests.support.factories import NOW
from tests.support.http_server import ImageServer

pytestmark = [pytest.mark.services, pytest.mark.slow]

REDIS_URL = os.environ.get("CARTAG_TEST_REDIS_URL", "redis://127.0.0.1:6379/13")
IMAGES = 72
CHUNK = 8
# Each image is answered this late, so a chunk takes over a second and a kill
# right after a chunk started lands in its middle.
DELAY_S = 1.0
VISIBILITY_S = 4


def require_redis() -> None:
    """Skip without Redis on a laptop; in CI (CI=true) its absence is a failure."""
    import redis

    try:
        redis.Redis.from_url(REDIS_URL, socket_connect_timeout=2).ping()
    except Exception as exc:  # noqa: BLE001 - any failure means "not here"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"CI=true but Redis is not reachable at {REDIS_URL}: {exc}")
        pytest.skip(f"Redis not reachable at {REDIS_URL}")


@dataclass
class Stack:
    url: str
    db: Database
    env: dict[str, str]
    logs: Path
    workers: dict[str, subprocess.Popen[bytes]]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _cartag(*args: str) -> list[str]:
    return [sys.executable, "-m", "cartag.cli", *args]


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[Stack]:
    require_postgres()
    require_redis()
    schema = f"e2e_{uuid.uuid4().hex[:12]}"
    admin = create_engine(PG_URL)
    with admin.begin() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    joiner = "&" if "?" in PG_URL else "?"
    db_url = f"{PG_URL}{joiner}options=-csearch_path%3D{schema}"
    db = Database(db_url)
    upgrade(db)
    port = _free_port()
    env = os.environ | {
        "CARTAG_DATABASE_URL": db_url,
        "CARTAG_AUTO_MIGRATE": "false",
        "CARTAG_DATA_DIR": str(tmp_path / "data"),
        "CARTAG_BROKER_URL": REDIS_URL,
        "CARTAG_CELERY_QUEUE": f"cartag-e2e-{uuid.uuid4().hex[:8]}",
        "CARTAG_BROKER_VISIBILITY_TIMEOUT_S": str(VISIBILITY_S),
        "CARTAG_JOB_CHUNK_SIZE": str(CHUNK),
        "CARTAG_ALLOWED_NETWORKS": "127.0.0.0/8",
        "CARTAG_READ_TIMEOUT_S": "10",
        # Eager torch: no ONNX export at start-up (the slowest part of this test).
        "CARTAG_ENGINE": "torch",
        "PYTHONUNBUFFERED": "1",
    }
    logs = tmp_path / "logs"
    logs.mkdir()
    procs: list[subprocess.Popen[bytes]] = []

    def spawn(name: str, *args: str) -> subprocess.Popen[bytes]:
        with (logs / f"{name}.log").open("wb") as out:
            proc = subprocess.Popen(_cartag(*args), env=env, stdout=out, stderr=subprocess.STDOUT)
        procs.append(proc)
        return proc

    try:
        spawn("api", "serve", "--port", str(port), "--log-level", "warning")
        base = f"http://127.0.0.1:{port}"
        workers = {name: spawn(name, "worker", "--hostname", f"{name}@%h") for name in ("w1", "w2")}
        _wait(lambda: _healthy(base), 120, "the API did not start", logs / "api.log")
        for name in workers:
            _wait(
                lambda n=name: "ready." in _read(logs / f"{n}.log"),
                120,
                f"worker {name} did not start",
                logs / f"{name}.log",
            )
        yield Stack(base, db, env, logs, workers)
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.terminate()
        for proc in procs:
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        db.dispose()
        with admin.begin() as conn:
            conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


def _read(path: Path) -> str:
    return path.read_text(encoding="utf-8", errors="replace") if path.exists() else ""


def _healthy(base: str) -> bool:
    try:
        return httpx.get(f"{base}/healthz", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def _wait(condition: Any, timeout_s: float, message: str, log: Path | None = None) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.05)
    tail = _read(log)[-3000:] if log else ""
    raise AssertionError(f"{message} within {timeout_s} s\n{tail}")


def _real_images(shared_data: Path, n: int) -> list[bytes]:
    """``n`` distinct real photos, taken round-robin from the color folders."""
    folders = sorted(p for p in shared_data.iterdir() if p.is_dir())
    files = [sorted(f.glob("*.jpg")) for f in folders]
    chosen: dict[str, bytes] = {}
    for i in range(max(len(f) for f in files)):
        for group in files:
            if i < len(group) and len(chosen) < n:
                data = group[i].read_bytes()
                chosen.setdefault(hashlib.sha256(data).hexdigest(), data)
    assert len(chosen) == n
    return list(chosen.values())


_STARTED = re.compile(r"job (\S+) chunk \[(\d+), (\d+)\): started")
_DONE = re.compile(r"job (\S+) chunk \[(\d+), (\d+)\): (\d+) claimed, (\d+) stored, (\d+) model")


def test_a_killed_worker_s_chunk_is_finished_by_the_other_exactly_once(
    stack: Stack, shared_data: Path
) -> None:
    with ImageServer() as server:
        images = []
        for i, data in enumerate(_real_images(shared_data, IMAGES)):
            server.add_slow(f"/car-{i}.jpg", DELAY_S, data)
            images.append({"url": server.url(f"/car-{i}.jpg")})
        with stack.db.write() as session:
            _, key = apikeys.create_key(session, name="e2e", roles=["classifier"], now=NOW)
        headers = {"Authorization": f"Bearer {key}"}
        response = httpx.post(
            f"{stack.url}/v1/jobs",
            json={"advertiser_id": "dealer-e2e", "images": images},
            headers=headers,
            timeout=30,
        )
        assert response.status_code == 202, response.text
        job_id = response.json()["id"]

        # Kill w1 (SIGKILL: no goodbye to the broker) right after it started a chunk.
        w1_log = stack.logs / "w1.log"

        def w1_mid_chunk() -> bool:
            log = _read(w1_log)
            started = _STARTED.findall(log)
            return bool(started) and started[-1][1:] not in {d[1:3] for d in _DONE.findall(log)}

        _wait(w1_mid_chunk, 60, "w1 never started a chunk", w1_log)
        stack.workers["w1"].send_signal(signal.SIGKILL)
        stack.workers["w1"].wait(timeout=10)
        killed = _STARTED.findall(_read(w1_log))[-1][1:]

        def finished() -> bool:
            with stack.db.read() as session:
                return job_repo.get_job(session, job_id).status in ("done", "failed")

        _wait(finished, 90, "the job did not finish", stack.logs / "w2.log")
        job = httpx.get(f"{stack.url}/v1/jobs/{job_id}", headers=headers, timeout=30).json()

    assert job["status"] == "done" and job["done"] == IMAGES, job
    results = job["results"]
    assert len(results) == IMAGES
    assert [r["url"] for r in results] == [i["url"] for i in images]
    statuses = Counter(r["status"] for r in results)
    assert set(statuses) <= {"classified", "cached"}, statuses
    with stack.db.read() as session:
        stored = job_repo.job_results(session, job_id)
        rows = list(session.scalars(select(ImageRow)))
    assert all(r is not None for r in stored)
    # One image per URL, each stored by one model run: a second classification of an
    # image would have rewritten its row (updated_at > created_at) or added a row.
    assert len(rows) == IMAGES
    assert len({r["image_key"] for r in results}) == IMAGES
    assert all(row.created_at == row.updated_at for row in rows)
    assert all(r["model_version"] for r in results)

    # The killed worker's chunk was finished by w2, and every model run that a
    # surviving chunk reported is one "classified" result.
    w2_done = _DONE.findall(_read(stack.logs / "w2.log"))
    assert any(d[1:3] == killed and int(d[3]) > 0 for d in w2_done), (killed, w2_done)
    all_done = _DONE.findall(_read(stack.logs / "w1.log")) + w2_done
    assert sum(int(d[5]) for d in all_done) == statuses["classified"]
