"""Bad input to the CLI: one line naming the setting, option or file, exit 2, no traceback.

Each case is what a sweep of every command found (2026-12-07): tracebacks from the store
and the file system, and input accepted that widened a key's reach or overwrote data.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner, Result

from cartag.cli import app
from cartag.store import advertisers as advertiser_repo
from cartag.store.db import Database
from tests.support.images import jpeg_bytes


def _refused(result: Result, *words: str) -> None:
    assert result.exit_code == 2, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    assert "Traceback" not in result.output
    text = " ".join(result.output.split())
    assert "error:" in text
    for word in words:
        assert word in text, (word, text)


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    return {"CARTAG_DATA_DIR": str(tmp_path / "data"), "COLUMNS": "200"}


DEAD_POSTGRES = "postgresql+psycopg://postgres@127.0.0.1:1/x"


@pytest.mark.parametrize(
    "args",
    [
        ["keys", "list"],
        ["advertisers", "list"],
        ["advertisers", "set", "dealer-1", "--adapt-answers"],
        ["monitor", "report"],
        ["dataset", "list"],
        ["models", "list"],
        ["db", "upgrade"],
    ],
)
@pytest.mark.parametrize(
    ("url", "words"),
    [
        ("nonsense://x", ["'nonsense' is not supported"]),
        ("garbage", ["CARTAG_DATABASE_URL", "not a database URL"]),
        (DEAD_POSTGRES, ["cannot reach the database", "CARTAG_DATABASE_URL"]),
    ],
    ids=["backend", "unparsable", "unreachable"],
)
def test_a_database_that_cannot_be_used_is_one_line(
    env: dict[str, str], args: list[str], url: str, words: list[str]
) -> None:
    result = CliRunner().invoke(app, args, env={**env, "CARTAG_DATABASE_URL": url})
    _refused(result, *words)


@pytest.mark.parametrize("args", [["keys", "list"], ["db", "upgrade"], ["advertisers", "list"]])
def test_a_data_dir_that_cannot_be_made_is_one_line(tmp_path: Path, args: list[str]) -> None:
    (tmp_path / "file").write_text("x")
    env = {"CARTAG_DATA_DIR": str(tmp_path / "file" / "data"), "COLUMNS": "200"}
    _refused(CliRunner().invoke(app, args, env=env), "CARTAG_DATA_DIR", "writable folder")


@pytest.mark.parametrize(
    "args", [["keys", "list"], ["db", "check"], ["models", "list"], ["monitor", "report"]]
)
def test_a_file_that_is_not_a_database_is_one_line(env: dict[str, str], args: list[str]) -> None:
    data = Path(env["CARTAG_DATA_DIR"])
    data.mkdir()
    (data / "cartag.db").write_text("not a database")
    _refused(CliRunner().invoke(app, args, env=env), "file is not a database", "move")
    (data / "cartag.db").unlink()
    (data / "cartag.db").mkdir()  # a folder where the file should be
    _refused(CliRunner().invoke(app, args, env=env), "cartag.db")


def test_a_blank_advertiser_never_makes_an_unscoped_key(env: dict[str, str]) -> None:
    runner = CliRunner()
    for blank in ("", " "):
        args = ["keys", "create", "--role", "classifier", "--advertiser", blank]
        _refused(runner.invoke(app, args, env=env), "advertiser is empty")
    listed = runner.invoke(app, ["keys", "list"], env=env)
    assert listed.exit_code == 0 and "(all)" not in listed.output


@pytest.mark.parametrize(
    "args",
    [
        ["advertisers", "set", "bad id", "--adapt-answers"],
        ["advertisers", "set", "é☃", "--adapt-answers"],
        ["advertisers", "set", "a" * 129, "--adapt-answers"],
        ["advertisers", "set", "..", "--adapt-answers"],
        ["advertisers", "set", "group/./dealer", "--adapt-answers"],
        ["keys", "create", "--role", "fixer", "--advertiser", ".."],
        ["models", "reclassify", "--advertiser", "bad id"],
        ["classify-files", "IMAGE", "--advertiser", ""],
        ["classify-files", "IMAGE", "--advertiser", "bad id/with spaces"],
    ],
)
def test_advertiser_ids_the_api_refuses_are_refused(
    env: dict[str, str], tmp_path: Path, args: list[str]
) -> None:
    image = tmp_path / "car.jpg"
    image.write_bytes(jpeg_bytes())
    args = [str(image) if a == "IMAGE" else a for a in args]
    _refused(CliRunner().invoke(app, args, env=env), "advertiser")
    database = Path(env["CARTAG_DATA_DIR"]) / "cartag.db"
    if database.exists():  # nothing was stored under the bad id
        db = Database(f"sqlite:///{database}")
        try:
            with db.read() as session:
                assert advertiser_repo.advertiser_summaries(session) == []
        finally:
            db.dispose()


def test_the_live_database_and_inputs_are_never_outputs(
    env: dict[str, str], tmp_path: Path
) -> None:
    runner = CliRunner()
    data = Path(env["CARTAG_DATA_DIR"])
    assert runner.invoke(app, ["db", "upgrade"], env=env).exit_code == 0
    export = ["dataset", "export", "cars", "--out", str(data / "cartag.db")]
    _refused(runner.invoke(app, export, env=env), "--out", "cartag's database")
    assert (data / "cartag.db").read_bytes().startswith(b"SQLite format 3\0")
    assert runner.invoke(app, ["keys", "list"], env=env).exit_code == 0
    folder = tmp_path / "labelled"
    folder.mkdir()
    (folder / "a.jpg").write_bytes(jpeg_bytes())
    labels = folder / "labels.csv"
    labels.write_text("path,image_type\na.jpg,Dealer\n")
    for report in (labels, folder / "a.jpg"):
        args = ["evaluate", str(folder), "--labels", str(labels), "--report", str(report)]
        _refused(runner.invoke(app, args, env=env), "--report", "would overwrite an input")
    assert labels.read_text() == "path,image_type\na.jpg,Dealer\n"
    args = ["evaluate", str(folder), "--labels", str(folder), "--report", str(tmp_path / "r.html")]
    _refused(runner.invoke(app, args, env=env), "--labels", "is a folder")
    args = ["evaluate", str(folder), "--folders", "--report", str(labels / "r.html")]
    _refused(runner.invoke(app, args, env=env), "--report", "is a file, not a folder")


def test_monitor_until_the_future_is_refused(env: dict[str, str]) -> None:
    for until in ("9999-12-31", "2100-01-01"):
        args = ["monitor", "report", "--until", until]
        _refused(CliRunner().invoke(app, args, env=env), "--until", "in the future")


def test_thread_counts_are_bounded(env: dict[str, str], tmp_path: Path) -> None:
    # 100,000 threads once took every process slot of the machine.
    image = tmp_path / "car.jpg"
    image.write_bytes(jpeg_bytes())
    for name in ("CARTAG_TORCH_THREADS", "CARTAG_INFERENCE_WORKERS"):
        result = CliRunner().invoke(app, ["predict", str(image)], env={**env, name: "100000"})
        _refused(result, name, "less than or equal")


def test_serve_refuses_a_port_out_of_range(env: dict[str, str]) -> None:
    result = CliRunner().invoke(app, ["serve", "--port", "99999"], env=env)
    assert result.exit_code == 2 and "--port" in result.output


def test_the_console_script_reports_what_a_command_lets_through(tmp_path: Path) -> None:
    # The entry point is cartag.cli:main, which turns store and file errors into one line.
    env = {**os.environ, "CARTAG_DATA_DIR": str(tmp_path / "data"), "COLUMNS": "200"}
    env["CARTAG_DATABASE_URL"] = DEAD_POSTGRES
    done = subprocess.run(
        [sys.executable, "-c", "from cartag.cli import main; main()", "keys", "list"],
        env=env,
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr and "cannot reach the database" in done.stderr


def test_serve_says_what_is_wrong_with_the_model_folder(
    env: dict[str, str], tmp_path: Path
) -> None:
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "config.json").write_text("{not json")
    result = CliRunner().invoke(
        app, ["serve", "--port", "0"], env={**env, "CARTAG_MODEL_DIR": str(folder)}
    )
    _refused(result, "config.json is not valid JSON", "CARTAG_MODEL_DIR")


def test_a_model_dir_that_is_a_file_is_called_so(env: dict[str, str], tmp_path: Path) -> None:
    image = tmp_path / "car.jpg"
    image.write_bytes(jpeg_bytes())
    result = CliRunner().invoke(
        app, ["predict", str(image)], env={**env, "CARTAG_MODEL_DIR": str(image)}
    )
    _refused(result, "is a file, not a model folder")


def test_register_advises_what_to_register(env: dict[str, str], tmp_path: Path) -> None:
    folder = tmp_path / "not-a-model"
    folder.mkdir()
    result = CliRunner().invoke(app, ["models", "register", str(folder)], env=env)
    _refused(result, "config.json is missing", "cartag models build-bundled")
    assert "reinstall cartag" not in result.output
