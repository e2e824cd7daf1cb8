"""The command line: keys, db, predict, serve."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from cartag.cli import app
from cartag.store.db import head_revision
from tests.support.images import placeholder_png, real_photos


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    return {"CARTAG_DATA_DIR": str(tmp_path / "data")}


def test_keys_create_list_revoke(env: dict[str, str]) -> None:
    runner = CliRunner()
    created = runner.invoke(app, ["keys", "create", "--role", "fixer", "--name", "ops"], env=env)
    assert created.exit_code == 0, created.output
    key = created.stdout.strip().splitlines()[-1]
    assert key.startswith("ctg_")
    listed = runner.invoke(app, ["keys", "list"], env=env)
    prefix = key.split("_")[1]
    assert prefix in listed.stdout and "ops" in listed.stdout and key not in listed.stdout
    assert runner.invoke(app, ["keys", "revoke", prefix], env=env).exit_code == 0


def test_bad_input_exits_2_with_a_message(env: dict[str, str], tmp_path: Path) -> None:
    runner = CliRunner()
    bad_role = runner.invoke(app, ["keys", "create", "--role", "root"], env=env)
    assert bad_role.exit_code == 2 and "unknown role" in bad_role.output
    missing = runner.invoke(app, ["predict", str(tmp_path / "nope")], env=env)
    assert missing.exit_code == 2 and "does not exist" in missing.output
    bad_db = runner.invoke(app, ["db", "upgrade"], env={**env, "CARTAG_DATABASE_URL": "nonsense"})
    assert bad_db.exit_code == 2 and "not a database URL" in bad_db.output
    bad_setting = runner.invoke(app, ["keys", "list"], env={**env, "CARTAG_RETRIES": "many"})
    assert bad_setting.exit_code == 2 and "CARTAG_" in bad_setting.output


def test_db_upgrade(env: dict[str, str]) -> None:
    result = CliRunner().invoke(app, ["db", "upgrade"], env=env)
    assert result.exit_code == 0 and head_revision() in result.output


@pytest.mark.slow
def test_predict_jsonl_on_a_folder(env: dict[str, str], tmp_path: Path, shared_data: Path) -> None:
    folder = tmp_path / "photos" / "nested"
    folder.mkdir(parents=True)
    for i, path in enumerate(real_photos(shared_data, 4)):
        shutil.copy(path, folder / f"{i}.jpg")
    (folder / "card.png").write_bytes(placeholder_png())
    (folder / "broken.jpg").write_bytes(b"not an image")
    result = CliRunner().invoke(app, ["predict", str(tmp_path / "photos"), "--jsonl"], env=env)
    assert result.exit_code == 0, result.output
    records = [json.loads(line) for line in result.stdout.splitlines()]
    assert len(records) == 6
    by_name = {Path(r["path"]).name: r for r in records}
    assert by_name["broken.jpg"]["error"] == "not_an_image"
    for name in ("0.jpg", "1.jpg", "2.jpg", "3.jpg", "card.png"):
        r = by_name[name]
        assert set(r) >= {"path", "image_type", "color", "type_scores", "color_scores"}
        assert abs(sum(r["type_scores"].values()) - 1) < 1e-3
        assert len(r["color_scores"]) == 12


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.mark.slow
def test_serve_starts_the_api_on_the_embedded_default(env: dict[str, str]) -> None:
    port = _free_port()
    cartag = Path(sys.executable).with_name("cartag")
    proc = subprocess.Popen(
        [str(cartag), "serve", "--port", str(port), "--log-level", "warning"],
        env={**os.environ, **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                health = httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2)
                break
            except httpx.TransportError:
                assert proc.poll() is None, proc.stdout.read() if proc.stdout else ""
                assert time.monotonic() < deadline, "server did not start"
                time.sleep(0.2)
        assert health.status_code == 200
        assert health.json()["database"] == "sqlite"
        assert Path(env["CARTAG_DATA_DIR"], "cartag.db").is_file()
    finally:
        proc.terminate()
        proc.wait(timeout=20)
        if proc.stdout is not None:
            proc.stdout.close()


def test_serve_on_an_unwritable_data_dir_says_why_and_exits_2(tmp_path: Path) -> None:
    # Issue 13 item 14. Tests run as root, where chmod blocks no write: the failures are
    # ones root gets too — a file where the folder should be, and a full disk (the
    # write-check file is /dev/full, whose writes fail with ENOSPC).
    runner = CliRunner()
    blocked = tmp_path / "data"
    blocked.write_text("a file")
    result = runner.invoke(app, ["serve"], env={"CARTAG_DATA_DIR": str(blocked)})
    assert result.exit_code == 2, result.output
    assert str(blocked) in result.output and "not a folder" in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    assert "Traceback" not in result.output

    full = tmp_path / "full"
    full.mkdir()
    (full / ".cartag-write-check").symlink_to("/dev/full")
    result = runner.invoke(app, ["serve"], env={"CARTAG_DATA_DIR": str(full)})
    assert result.exit_code == 2, result.output
    assert "no space left" in result.output and str(full) in result.output
    assert not (full / "cartag.db").exists()  # stopped before touching the database


def test_db_check_is_what_serve_sh_runs_first(env: dict[str, str], tmp_path: Path) -> None:
    runner = CliRunner()
    ok = runner.invoke(app, ["db", "check"], env=env)
    assert ok.exit_code == 0 and "take writes" in ok.output
    full = tmp_path / "full"
    full.mkdir()
    (full / ".cartag-write-check").symlink_to("/dev/full")
    refused = runner.invoke(app, ["db", "check"], env={"CARTAG_DATA_DIR": str(full)})
    assert refused.exit_code == 2 and "no space left" in refused.output
