"""``cartag worker`` refuses a configuration it cannot serve, with a message and exit code 2."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cartag.cli import app
from tests.support.db import fresh_database


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    base = {"CARTAG_DATA_DIR": str(tmp_path / "data"), "CARTAG_BROKER_URL": ""}
    return {**base, "CARTAG_DATABASE_URL": "", **extra}


def test_worker_needs_a_broker(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["worker"], env=_env(tmp_path))
    assert result.exit_code == 2
    assert "CARTAG_BROKER_URL is not set" in result.output


def test_worker_needs_a_shared_postgresql_database(tmp_path: Path) -> None:
    env = _env(tmp_path, CARTAG_BROKER_URL="redis://127.0.0.1:6379/13")
    result = CliRunner().invoke(app, ["worker"], env=env)
    assert result.exit_code == 2
    assert "must share a PostgreSQL database" in result.output


def test_serve_refuses_a_broker_with_sqlite(tmp_path: Path) -> None:
    env = _env(tmp_path, CARTAG_BROKER_URL="redis://127.0.0.1:6379/13")
    result = CliRunner().invoke(app, ["serve", "--port", "0"], env=env)
    assert result.exit_code == 2
    assert "must share a PostgreSQL database" in result.output


def test_a_broker_url_that_is_not_one_is_refused(tmp_path: Path) -> None:
    # "garbage" was read as amqp://guest@garbage:5672 and retried; nonsense:// a KeyError.
    for url in ("garbage", "nonsense://x"):
        result = CliRunner().invoke(app, ["worker"], env=_env(tmp_path, CARTAG_BROKER_URL=url))
        assert result.exit_code == 2, result.output
        assert "CARTAG_BROKER_URL" in result.output and "not a broker URL" in result.output


def test_worker_refuses_an_unknown_log_level(tmp_path: Path) -> None:
    env = _env(tmp_path, CARTAG_BROKER_URL="redis://127.0.0.1:6379/13")
    result = CliRunner().invoke(app, ["worker", "--loglevel", "bogus"], env=env)
    assert result.exit_code == 2
    assert "--loglevel 'bogus'" in result.output


@pytest.mark.services
@pytest.mark.slow
def test_a_busy_metrics_port_names_the_setting(tmp_path: Path) -> None:
    # "error: Address already in use" named neither the port nor the setting.
    with fresh_database("postgresql", tmp_path) as db, socket.socket() as busy:
        busy.bind(("0.0.0.0", 0))
        busy.listen()
        port = busy.getsockname()[1]
        env = _env(
            tmp_path,
            CARTAG_BROKER_URL="redis://127.0.0.1:6379/13",
            CARTAG_DATABASE_URL=db.engine.url.render_as_string(hide_password=False),
            CARTAG_WORKER_METRICS_PORT=str(port),
        )
        result = CliRunner().invoke(app, ["worker"], env=env)
    assert result.exit_code == 2, result.output
    text = " ".join(result.output.split())
    assert f"port {port}" in text and "CARTAG_WORKER_METRICS_PORT" in text
