"""The command line: keys, db, predict, serve."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from cartag.cli import app
from cartag.models.classifier import BUNDLED_DIR, read_config
from cartag.store.db import head_revision
from tests.support.http_server import ImageServer
from tests.support.images import placeholder_png, real_photos
from tests.support.models import make_model_dir


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
        assert r["model_version"] == str(read_config(BUNDLED_DIR)["version"])
        assert abs(sum(r["type_scores"].values()) - 1) < 1e-3
        assert len(r["color_scores"]) == 12


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@contextlib.contextmanager
def _serving(env: dict[str, str], *options: str) -> Iterator[tuple[subprocess.Popen[bytes], str]]:
    """``cartag serve`` on a free port until /healthz answers; yields it and its base URL."""
    port = _free_port()
    cartag = Path(sys.executable).with_name("cartag")
    proc = subprocess.Popen(
        [str(cartag), "serve", "--port", str(port), "--log-level", "warning", *options],
        env={**os.environ, **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                httpx.get(f"{base}/healthz", timeout=2)
                break
            except httpx.TransportError:
                assert proc.poll() is None, proc.stdout.read() if proc.stdout else ""
                assert time.monotonic() < deadline, "server did not start"
                time.sleep(0.2)
        yield proc, base
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        if proc.stdout is not None:
            proc.stdout.close()


@pytest.mark.slow
def test_serve_starts_the_api_on_the_embedded_default(env: dict[str, str]) -> None:
    with _serving(env) as (_, base):
        health = httpx.get(f"{base}/healthz", timeout=5)
        assert health.status_code == 200
        assert health.json()["database"] == "sqlite"
        assert Path(env["CARTAG_DATA_DIR"], "cartag.db").is_file()


def _children(pid: int) -> list[int]:
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


@pytest.mark.slow
def test_serve_workers_runs_processes_that_share_the_store(
    env: dict[str, str], shared_data: Path
) -> None:
    key = CliRunner().invoke(app, ["keys", "create", "--role", "classifier"], env=env)
    headers = {"Authorization": f"Bearer {key.stdout.strip().splitlines()[-1]}"}
    env = {**env, "CARTAG_ALLOWED_NETWORKS": "127.0.0.0/8"}
    with ImageServer() as images, _serving(env, "--workers", "2") as (proc, base):
        # uvicorn's supervisor runs the two serving processes (plus its resource tracker).
        serving = [
            child
            for child in _children(proc.pid)
            if b"spawn_main" in Path(f"/proc/{child}/cmdline").read_bytes()
        ]
        assert len(serving) == 2
        urls = []
        for i, path in enumerate(real_photos(shared_data, 6)):
            images.add_file(f"/{i}.jpg", path.read_bytes())
            urls.append(images.url(f"/{i}.jpg"))
        body = {"advertiser_id": "a", "images": [{"url": u} for u in urls]}
        with httpx.Client(base_url=base, headers=headers, timeout=120) as client:
            # Several connections, so that both processes take requests; every answer
            # after the first comes from the one shared SQLite store.
            answers = [client.post("/v1/classify", json=body) for _ in range(2)]
            with httpx.Client(base_url=base, headers=headers, timeout=120) as other:
                answers.append(other.post("/v1/classify", json=body))
        assert [a.status_code for a in answers] == [200, 200, 200]
        assert answers[0].json()["counts"] == {"classified": 6}
        assert answers[1].json()["counts"] == answers[2].json()["counts"] == {"cached": 6}


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


def test_version() -> None:
    from cartag import __version__

    result = CliRunner().invoke(app, ["--version"])
    assert result.exit_code == 0 and result.stdout.strip() == f"cartag {__version__}"


def test_a_bad_setting_is_named_by_its_variable(env: dict[str, str]) -> None:
    result = CliRunner().invoke(app, ["keys", "list"], env={**env, "CARTAG_ENGINE": "gpu"})
    assert result.exit_code == 2
    assert "CARTAG_ENGINE=gpu" in result.output and "'onnx' or 'torch'" in result.output


def test_an_unreachable_database_is_one_line_naming_the_setting(env: dict[str, str]) -> None:
    port = _free_port()  # nothing listens there
    url = f"postgresql+psycopg://cartag:secret@127.0.0.1:{port}/cartag"
    for command in (["keys", "list"], ["db", "upgrade"], ["db", "check"], ["models", "list"]):
        result = CliRunner().invoke(app, command, env={**env, "CARTAG_DATABASE_URL": url})
        assert result.exit_code == 2, (command, result.output)
        lines = result.output.strip().splitlines()
        assert len(lines) == 1 and "CARTAG_DATABASE_URL" in lines[0], (command, result.output)
        assert "secret" not in result.output and "Traceback" not in result.output


@pytest.mark.slow
def test_predict_fails_when_no_file_could_be_classified(
    env: dict[str, str], tmp_path: Path, shared_data: Path
) -> None:
    folder = tmp_path / "bad"
    folder.mkdir()
    (folder / "a.jpg").write_bytes(b"not an image")
    (folder / "b.png").write_bytes(b"")
    failed = CliRunner().invoke(app, ["predict", str(folder)], env=env)
    assert failed.exit_code == 1
    assert "no file could be classified" in failed.output
    assert f"{folder / 'a.jpg'}: not_an_image" in failed.output
    # One good file among them: the run succeeds and still lists what it skipped.
    shutil.copy(real_photos(shared_data, 1)[0], folder / "c.jpg")
    mixed = CliRunner().invoke(app, ["predict", str(folder)], env=env)
    assert mixed.exit_code == 0, mixed.output
    assert "skipped 2 of 3 file(s)" in mixed.output


@pytest.mark.slow
def test_classify_files_goes_through_the_pipeline_cache_and_fixes(
    env: dict[str, str], tmp_path: Path, shared_data: Path
) -> None:
    from cartag.clock import FakeClock
    from cartag.pipeline.fixes import Author, apply_fix
    from cartag.pipeline.thumbnails import ThumbnailSource, thumbnail_name
    from cartag.store.blobs import LocalBlobStore, derived_path
    from cartag.store.db import Database
    from cartag.store.images import get_images

    folder = tmp_path / "photos"
    folder.mkdir()
    for i, path in enumerate(real_photos(shared_data, 3)):
        shutil.copy(path, folder / f"{i}.jpg")
    (folder / "broken.jpg").write_bytes(b"not an image")
    args = ["classify-files", str(folder), "--advertiser", "demo", "--jsonl"]
    first = CliRunner().invoke(app, args, env=env)
    assert first.exit_code == 0, first.output
    rows = [json.loads(line) for line in first.stdout.splitlines()]
    by_name = {Path(r["path"]).name: r for r in rows}
    assert by_name["broken.jpg"]["status"] == "skipped"
    assert by_name["broken.jpg"]["reason"] == "not_an_image"
    good = [by_name[f"{i}.jpg"] for i in range(3)]
    assert {r["status"] for r in good} == {"classified"} and {r["source"] for r in good} == {
        "model"
    }
    assert all(r["image_key"].startswith("sha256:") for r in good)  # keyed by content
    assert "skipped" in first.output and "broken.jpg: not_an_image" in first.output

    db = Database(f"sqlite:///{tmp_path / 'data' / 'cartag.db'}")
    key = good[0]["image_key"]
    with db.read() as session:
        row = get_images(session, [key])[key]
    assert row.url == (folder / "0.jpg").resolve().as_uri()
    # The fix page's preview is kept: the file cannot be downloaded again.
    blobs = LocalBlobStore(tmp_path / "data" / "blobs")
    source = ThumbnailSource(key, row.url, row.content_sha256)
    assert blobs.find(derived_path(thumbnail_name(source), "jpg")) is not None
    with db.write() as session:
        apply_fix(
            session,
            image_key=key,
            advertiser_id="demo",
            author=Author("alice"),
            scope="advertiser",
            image_type="Stock",
            color=None,
            comment=None,
            clock=FakeClock(),
        )
    db.dispose()
    second = CliRunner().invoke(app, args, env=env)
    assert second.exit_code == 0, second.output
    again = {Path(r["path"]).name: r for r in map(json.loads, second.stdout.splitlines())}
    # The advertiser's own fix: an override of the model's answer.
    assert again["0.jpg"]["image_type"] == "Stock" and again["0.jpg"]["source"] == "override"
    assert {again[f"{i}.jpg"]["status"] for i in (1, 2)} == {"cached"}

    (folder / "0.jpg").unlink()
    (folder / "1.jpg").unlink()
    (folder / "2.jpg").unlink()
    none = CliRunner().invoke(app, ["classify-files", str(folder)], env=env)
    assert none.exit_code == 1 and "no file could be classified" in none.output


@pytest.mark.slow
def test_predict_and_evaluate_say_which_model_answers(env: dict[str, str], tmp_path: Path) -> None:
    # They use the bundled model or CARTAG_MODEL_DIR, never the registry's production, and
    # their console output named neither: its figures could be taken for production's.
    photos = tmp_path / "photos"
    (photos / "Placeholder").mkdir(parents=True)
    (photos / "Placeholder" / "card.png").write_bytes(placeholder_png())
    env = {**env, "CARTAG_ENGINE": "torch"}
    bundled = str(read_config(BUNDLED_DIR)["version"])

    predicted = CliRunner().invoke(app, ["predict", str(photos)], env=env)
    assert predicted.exit_code == 0, predicted.output
    assert f"model: {bundled} (the bundled model, {BUNDLED_DIR}; not the registry's production" in (
        predicted.stderr
    )
    assert "model:" not in predicted.stdout  # the table alone

    custom = make_model_dir(tmp_path / "custom", "custom-1")
    args = ["evaluate", str(photos), "--folders", "--report", str(tmp_path / "r.html")]
    evaluated = CliRunner().invoke(app, args, env={**env, "CARTAG_MODEL_DIR": str(custom)})
    assert evaluated.exit_code == 0, evaluated.output
    assert f"model: custom-1 (CARTAG_MODEL_DIR={custom}; not the registry's production" in (
        evaluated.stderr
    )


@pytest.mark.slow
def test_evaluate_replaces_its_report_and_metrics_whole(
    env: dict[str, str], tmp_path: Path
) -> None:
    # Both were written in place: an evaluation interrupted while writing (a full disk,
    # Ctrl-C) left a truncated report or metrics file where the previous ones were.
    photos = tmp_path / "photos"
    (photos / "Placeholder").mkdir(parents=True)
    (photos / "Placeholder" / "card.png").write_bytes(placeholder_png())
    out = tmp_path / "out"
    out.mkdir()
    report, metrics = out / "r.html", out / "m.json"
    readers = []
    for path in (report, metrics):
        path.write_text("previous")
        reader = tmp_path / f"reader-{path.name}"
        reader.hardlink_to(path)  # what a reader that opened the old file still sees
        readers.append(reader)
    args = ["evaluate", str(photos), "--folders", "--report", str(report), "--json", str(metrics)]
    evaluated = CliRunner().invoke(app, args, env={**env, "CARTAG_ENGINE": "torch"})
    assert evaluated.exit_code == 0, evaluated.output
    assert "<html" in report.read_text().lower() and "tasks" in json.loads(metrics.read_text())
    assert [reader.read_text() for reader in readers] == ["previous", "previous"]
    assert sorted(p.name for p in out.iterdir()) == ["m.json", "r.html"]  # no temp file left
