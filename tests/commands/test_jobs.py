"""``cartag jobs cancel``: the CLI counterpart of ``POST /v1/jobs/{id}/cancel``."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cartag.cli import app
from cartag.settings import Settings
from cartag.store import jobs as job_repo
from cartag.store.db import Database, upgrade
from cartag.store.tables import JobRow
from tests.support.factories import finished_job


def _env(tmp_path: Path) -> dict[str, str]:
    return {"CARTAG_DATA_DIR": str(tmp_path / "data"), "CARTAG_DATABASE_URL": ""}


@pytest.fixture
def cli_db(tmp_path: Path) -> Iterator[Database]:
    db = Database(Settings(data_dir=tmp_path / "data").resolved_database_url)
    upgrade(db)
    yield db
    db.dispose()


def _status(db: Database, job_id: str) -> tuple[str, str | None, bool]:
    with db.read() as session:
        job = job_repo.get_job(session, job_id)
        return job.status, job.error, job.finished_at is not None


def test_a_queued_job_is_cancelled_and_keeps_its_results(tmp_path: Path, cli_db: Database) -> None:
    job_id = finished_job(cli_db, "https://backend.example/hook", status=job_repo.QUEUED)
    got = CliRunner().invoke(
        app, ["jobs", "cancel", job_id, "--by", "ops-dana"], env=_env(tmp_path)
    )
    assert got.exit_code == 0, got.output
    assert f"job {job_id} cancelled" in got.stdout
    assert "1 of 1 images answered" in got.stdout
    assert "callback is sent by the next sweep" in got.stderr
    assert _status(cli_db, job_id) == ("failed", "cancelled by ops-dana", True)
    with cli_db.read() as session:
        assert [r["status"] for r in job_repo.job_results(session, job_id) if r] == ["skipped"]
        # Left for a sweep to send: the job's callback was never tried.
        assert job_id in {job for job, _ in job_repo.pending_callbacks(session, since=None)}


def test_a_running_job_is_cancelled_by_the_command_line_by_default(
    tmp_path: Path, cli_db: Database
) -> None:
    job_id = finished_job(cli_db, None, status=job_repo.QUEUED)
    with cli_db.write() as session:
        job = session.get(JobRow, job_id)
        assert job is not None
        job.status = job_repo.RUNNING
    got = CliRunner().invoke(app, ["jobs", "cancel", job_id], env=_env(tmp_path))
    assert got.exit_code == 0, got.output
    assert "callback" not in got.output  # it has none
    assert _status(cli_db, job_id) == ("failed", "cancelled by the command line", True)


@pytest.mark.parametrize("status", ["done", "failed"])
def test_a_finished_job_is_left_as_it_is_with_exit_1(
    tmp_path: Path, cli_db: Database, status: str
) -> None:
    job_id = finished_job(cli_db, None, status=status)
    got = CliRunner().invoke(app, ["jobs", "cancel", job_id], env=_env(tmp_path))
    assert got.exit_code == 1, got.output
    assert f"job {job_id} is {status} already" in got.stderr
    assert _status(cli_db, job_id) == (status, None, True)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["no-such-job"], "no job with id 'no-such-job'"),
        (["a\x00b"], "JOB_ID holds a NUL character"),
        (["JOB", "--by", " "], "--by must be 1-128 characters"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(
    tmp_path: Path, cli_db: Database, argv: list[str], message: str
) -> None:
    got = CliRunner().invoke(app, ["jobs", "cancel", *argv], env=_env(tmp_path))
    assert got.exit_code == 2, got.output
    assert message in got.stderr
    assert "Traceback" not in got.output
