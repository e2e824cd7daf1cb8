"""``cartag callbacks failed`` / ``redeliver``: callbacks that did not get through; a callback
another process holds is left to it; ``--pending`` sweeps."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cartag.cli import app
from cartag.clock import FakeClock, SystemClock
from cartag.settings import Settings
from cartag.store import jobs as job_repo
from cartag.store.db import Database, upgrade
from tests.support.factories import finished_job
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
    return finished_job(
        db, callback_url, status=status, callback_status=callback_status, now=FakeClock().now()
    )


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
        ([redacted, "--url", "ftp://x/hook"], "is not a usable http(s) URL"),
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


def _done_job(db: Database, callback_url: str, callback_status: str | None) -> str:
    # Real time: the command's clock is the system's, and the claims' leases are read by it.
    return finished_job(db, callback_url, callback_status=callback_status, now=SystemClock().now())


def _held(visible: str, seconds: float) -> str:
    """The status of a callback a process holds for ``seconds`` more (negative: lapsed)."""
    until = SystemClock().now() + dt.timedelta(seconds=seconds)
    return job_repo.claim_status(visible, until)


def test_redeliver_leaves_a_callback_another_process_is_sending(
    tmp_path: Path, cli_db: Database, server: ImageServer
) -> None:
    server.add_json_sink("/hook")
    held = _done_job(cli_db, server.url("/hook"), _held("retrying:http_503", 120))
    runner = CliRunner()

    listed = runner.invoke(app, ["callbacks", "failed"], env=_env(tmp_path))
    assert listed.exit_code == 0, listed.output
    assert "\tretrying:http_503 (being sent, held until " in listed.stdout

    for args in ([held], [held, "--url", server.url("/hook")]):
        result = runner.invoke(app, ["callbacks", "redeliver", *args], env=_env(tmp_path))
        assert result.exit_code == 1, result.output
        assert "being sent by another process" in result.output
        assert "Traceback" not in result.output
        assert len(result.output.strip().splitlines()) == 1
    assert server.received("/hook") == []
    with cli_db.read() as session:
        assert job_repo.get_job(session, held).callback_status.startswith("retrying:http_503@")  # type: ignore[union-attr]


def test_redeliver_pending_sends_what_no_process_is_sending(
    tmp_path: Path, cli_db: Database, server: ImageServer
) -> None:
    server.add_json_sink("/hook")
    never = _done_job(cli_db, server.url("/hook"), None)
    lapsed = _done_job(cli_db, server.url("/hook"), _held("sending:", -1))
    _done_job(cli_db, server.url("/hook"), _held("sending:", 120))  # still held
    _done_job(cli_db, server.url("/hook"), "failed:http_410")  # final: listed, not swept
    runner = CliRunner()

    result = runner.invoke(app, ["callbacks", "redeliver", "--pending"], env=_env(tmp_path))
    assert result.exit_code == 1, result.output  # the held one is still not delivered
    assert "sent 2 callback(s); 1 not delivered" in result.stdout
    assert sorted(p["job_id"] for p in server.received("/hook")) == sorted([never, lapsed])


def test_redeliver_pending_succeeds_beside_callbacks_that_failed_for_good(
    tmp_path: Path, cli_db: Database, server: ImageServer
) -> None:
    # A final failure is not --pending's to retry: it made every later run exit 1, so a
    # cron job could not tell a sweep that worked from one that did not.
    server.add_json_sink("/hook")
    _done_job(cli_db, server.url("/hook"), "failed:http_410")
    never = _done_job(cli_db, server.url("/hook"), None)
    result = CliRunner().invoke(app, ["callbacks", "redeliver", "--pending"], env=_env(tmp_path))
    assert result.exit_code == 0, result.output
    assert "sent 1 callback(s); 0 not delivered" in result.stdout
    assert [p["job_id"] for p in server.received("/hook")] == [never]


def test_redeliver_wants_a_job_or_pending_not_both(tmp_path: Path, cli_db: Database) -> None:
    for args in ([], ["some-job", "--pending"]):
        result = CliRunner().invoke(app, ["callbacks", "redeliver", *args], env=_env(tmp_path))
        assert result.exit_code == 2, result.output
        assert "give a JOB_ID, or --pending" in result.output
        assert len(result.output.strip().splitlines()) == 1
