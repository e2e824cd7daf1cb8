"""``cartag callbacks failed`` / ``redeliver``: callbacks that did not get through."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cartag.cli import app
from cartag.clock import FakeClock
from cartag.settings import Settings
from cartag.store import jobs as job_repo
from cartag.store.db import Database, upgrade
from tests.support.http_server import ImageServer


@pytest.fixture
def server() -> Iterator[ImageServer]:
    with ImageServer() as srv:
        yield srv


def _env(tmp_path: Path) -> dict[str, str]:
    return {
        "CARTAG_DATA_DIR": str(tmp_path / "data"),
        "CARTAG_DATABASE_URL": "",
        "CARTAG_ALLOWED_NETWORKS": "127.0.0.0/8",
    }


def _job(db: Database, status: str, callback_url: str | None, callback_status: str | None) -> str:
    clock = FakeClock()
    with db.write() as session:
        job = job_repo.create_job(
            session,
            advertiser_id="a",
            items=[("https://cdn.example/1.jpg", None)],
            callback_url=callback_url,
            now=clock.now(),
        )
        if status != job_repo.QUEUED:
            job_repo.finish_job(session, job.id, status=status, now=clock.now())
        if callback_status is not None:
            job_repo.set_callback_status(session, job.id, callback_status)
        return job.id


@pytest.fixture
def cli_db(tmp_path: Path) -> Iterator[Database]:
    db = Database(Settings(data_dir=tmp_path / "data").resolved_database_url)
    upgrade(db)
    yield db
    db.dispose()


def test_failed_callbacks_are_listed_and_redelivered(
    tmp_path: Path, cli_db: Database, server: ImageServer
) -> None:
    server.add_json_sink("/hook")
    hook = server.url("/hook")
    failed = _job(cli_db, "done", hook, "failed:http_500")
    pending = _job(cli_db, "failed", hook, None)
    _job(cli_db, "done", hook, "delivered:200")
    _job(cli_db, "queued", hook, None)
    runner = CliRunner()

    listed = runner.invoke(app, ["callbacks", "failed"], env=_env(tmp_path))
    assert listed.exit_code == 0, listed.output
    lines = listed.stdout.strip().splitlines()
    assert lines[0].startswith("job_id\t") and len(lines) == 3
    assert {line.split("\t")[0] for line in lines[1:]} == {failed, pending}
    assert "failed:http_500" in listed.stdout and "\tpending\t" in listed.stdout

    sent = runner.invoke(app, ["callbacks", "redeliver", failed], env=_env(tmp_path))
    assert sent.exit_code == 0, sent.output
    assert "delivered:200" in sent.stdout
    assert [p["job_id"] for p in server.received("/hook")] == [failed]
    listed = runner.invoke(app, ["callbacks", "failed"], env=_env(tmp_path))
    assert failed not in listed.stdout and pending in listed.stdout


def test_redeliver_explains_what_it_cannot_do(
    tmp_path: Path, cli_db: Database, server: ImageServer
) -> None:
    server.add_status("/down", 500)
    server.add_json_sink("/hook")
    redacted = _job(cli_db, "done", server.url("/hook") + "?token=***", "failed:http_500")
    running = _job(cli_db, "queued", server.url("/hook"), None)
    down = _job(cli_db, "done", server.url("/down"), "failed:http_500")
    runner = CliRunner()
    env = _env(tmp_path)

    for args, words in (
        (["no-such-job"], "no job with id 'no-such-job'"),
        ([running], "its callback is sent when it finishes"),
        ([redacted], "give the full URL with --url"),
        ([redacted, "--url", "ftp://x/hook"], "--url must be an http(s) URL"),
    ):
        result = runner.invoke(app, ["callbacks", "redeliver", *args], env=env)
        assert result.exit_code == 2, result.output
        assert words in result.output and "Traceback" not in result.output
        assert len(result.output.strip().splitlines()) == 1

    # The receiver still fails: said, exit 1, the failure stays listed.
    result = runner.invoke(app, ["callbacks", "redeliver", down], env=env)
    assert result.exit_code == 1 and "failed:http_500" in result.stdout

    # A redacted URL is given again in full: delivered, the token used then dropped.
    full = server.url("/hook") + "?token=s3cr3t"
    result = runner.invoke(app, ["callbacks", "redeliver", redacted, "--url", full], env=env)
    assert result.exit_code == 0, result.output
    (request,) = server.requests("/hook")
    assert request.path == "/hook?token=s3cr3t"
    with cli_db.read() as session:
        stored = job_repo.get_job(session, redacted).callback_url
    assert stored is not None and "s3cr3t" not in stored
