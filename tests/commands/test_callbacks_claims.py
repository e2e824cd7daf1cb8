"""``cartag callbacks``: a callback another process holds is left to it; ``--pending`` sweeps."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cartag.cli import app
from cartag.clock import SystemClock
from cartag.settings import Settings
from cartag.store import jobs as job_repo
from cartag.store.db import Database, upgrade
from tests.support.http_server import ImageServer


@pytest.fixture
def server() -> Iterator[ImageServer]:
    with ImageServer() as srv:
        yield srv


@pytest.fixture
def cli_db(tmp_path: Path) -> Iterator[Database]:
    db = Database(Settings(data_dir=tmp_path / "data").resolved_database_url)
    upgrade(db)
    yield db
    db.dispose()


def _env(tmp_path: Path) -> dict[str, str]:
    return {
        "CARTAG_DATA_DIR": str(tmp_path / "data"),
        "CARTAG_DATABASE_URL": "",
        "CARTAG_ALLOWED_NETWORKS": "127.0.0.0/8",
    }


def _done_job(db: Database, callback_url: str, callback_status: str | None) -> str:
    now = SystemClock().now()
    with db.write() as session:
        job = job_repo.create_job(
            session,
            advertiser_id="a",
            items=[("https://cdn.example/1.jpg", None)],
            callback_url=callback_url,
            now=now,
            results={0: {"url": "https://cdn.example/1.jpg", "status": "skipped"}},
        )
        job_repo.finish_job(session, job.id, status=job_repo.DONE, now=now)
        if callback_status is not None:
            job_repo.set_callback_status(session, job.id, callback_status)
        return job.id


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
    assert result.exit_code == 1, result.output  # two are still not delivered
    assert "sent 2 callback(s); 2 not delivered" in result.stdout
    assert sorted(p["job_id"] for p in server.received("/hook")) == sorted([never, lapsed])


def test_redeliver_wants_a_job_or_pending_not_both(tmp_path: Path, cli_db: Database) -> None:
    for args in ([], ["some-job", "--pending"]):
        result = CliRunner().invoke(app, ["callbacks", "redeliver", *args], env=_env(tmp_path))
        assert result.exit_code == 2, result.output
        assert "give a JOB_ID, or --pending" in result.output
        assert len(result.output.strip().splitlines()) == 1
