"""Bad input to the CLI, second sweep (2026-12-07): outputs over inputs, values that
crashed later readers, and state changed by a refused command.

Each case: one line naming the option or setting, exit 2, no traceback, nothing changed.
"""

from __future__ import annotations

import datetime as dt
import json
import socket
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cartag.cli import app
from cartag.settings import Settings
from cartag.store import apikeys
from cartag.store import jobs as job_repo
from cartag.store.db import Database, upgrade
from tests.commands.test_bad_input import _refused
from tests.support.factories import finished_job
from tests.support.images import jpeg_bytes
from tests.support.shared_root import make_data_root


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    return {"CARTAG_DATA_DIR": str(tmp_path / "data"), "COLUMNS": "200"}


def test_shared_labels_never_writes_over_its_input(env: dict[str, str], tmp_path: Path) -> None:
    root = tmp_path / "shared"
    make_data_root(root)
    labels = root / "vcr-train" / "labels.csv"
    before = labels.read_bytes()
    args = ["dataset", "shared-labels", "--data", str(root), "--out", str(labels)]
    _refused(CliRunner().invoke(app, args, env=env), "--out", "would overwrite an input")
    assert labels.read_bytes() == before


def test_a_report_is_never_written_over_a_linked_photo(env: dict[str, str], tmp_path: Path) -> None:
    # A folder of links to the shared photos: the report path named inside it resolves
    # to the photo elsewhere, which the resolved-only check let evaluate overwrite.
    photos = tmp_path / "elsewhere"
    photos.mkdir()
    photo = photos / "a.jpg"
    photo.write_bytes(jpeg_bytes())
    before = photo.read_bytes()
    folder = tmp_path / "linked" / "Dealer"
    folder.mkdir(parents=True)
    (folder / "a.jpg").symlink_to(photo)
    args = ["evaluate", str(folder.parent), "--folders", "--report", str(folder / "a.jpg")]
    _refused(CliRunner().invoke(app, args, env=env), "--report", "would overwrite an input")
    assert photo.read_bytes() == before


def test_model_builds_check_their_output_before_training(
    env: dict[str, str], tmp_path: Path
) -> None:
    root = tmp_path / "shared"
    make_data_root(root)
    vcr = root / "vcr-train"
    labels = vcr / "labels.csv"
    before = labels.read_bytes()
    runner = CliRunner()
    finetune = ["models", "finetune", "--data", str(vcr), "--epochs", "1", "--out"]
    _refused(runner.invoke(app, [*finetune, str(labels)], env=env), "--out", "training data")
    assert labels.read_bytes() == before
    _refused(runner.invoke(app, [*finetune, str(tmp_path / "w.bin")], env=env), "--out", ".npz")
    _refused(runner.invoke(app, [*finetune, str(tmp_path)], env=env), "--out", "is a folder")
    existing = tmp_path / "existing.file"
    existing.write_text("keep")
    build = ["models", "build-bundled", "--data", str(vcr), "--out", str(existing)]
    _refused(runner.invoke(app, build, env=env), "--out", "is a file")
    assert existing.read_text() == "keep"
    reference = ["models", "add-reference", str(tmp_path), "--threads", "-1"]
    _refused(runner.invoke(app, reference, env=env), "--threads")
    reference = ["models", "add-reference", str(tmp_path), "--data", str(root)]
    _refused(runner.invoke(app, reference, env=env), "not a model folder")


def test_monitor_dates_before_any_record_are_refused(env: dict[str, str]) -> None:
    runner = CliRunner()
    for args in (
        ["--until", "0001-01-08"],
        ["--until", "0001-03-01", "--since", "9w"],
        ["--until", "1999-12-31"],
    ):
        result = runner.invoke(app, ["monitor", "report", *args], env=env)
        _refused(result, "--until", "nothing is recorded that early")
    result = runner.invoke(
        app, ["monitor", "report", "--until", "2026-01-01", "--since", "2026-01-10"], env=env
    )
    _refused(result, "--since", "after the report's last day (2026-01-01)")


def test_metrics_out_of_format_are_refused_at_register(env: dict[str, str], tmp_path: Path) -> None:
    from cartag.models.classifier import BUNDLED_DIR

    runner = CliRunner()
    for document, where in (
        ({"s": {"image_type": {"accuracy": "high"}}}, "s.image_type.accuracy"),
        (
            {"s": {"image_type": {"per_class": {"Dealer": {"support": "many", "recall": 0.5}}}}},
            "s.image_type.per_class.Dealer.support",
        ),
        ({"s": [1, 2]}, "'s' must map each task"),
        # Inflated figures were accepted, and passed every promotion gate.
        ({"s": {"image_type": {"accuracy": 2}}}, "s.image_type.accuracy is 2; it must be a"),
        (
            {"s": {"color": {"per_class": {"Red": {"support": 40, "recall": 5}}}}},
            "s.color.per_class.Red.recall is 5; it must be a fraction between 0 and 1",
        ),
    ):
        path = tmp_path / "metrics.json"
        path.write_text(json.dumps(document))
        args = ["models", "register", str(BUNDLED_DIR), "--metrics", str(path)]
        _refused(runner.invoke(app, args, env=env), where)
    # Nothing was stored: the one version listed is the bundled model registered at first
    # use, with its card's figures.
    listed = runner.invoke(app, ["models", "list"], env=env)
    assert listed.exit_code == 0, listed.output
    assert "card, held-out" in listed.output and listed.output.count("bundled-") == 1


def _db(env: dict[str, str]) -> Database:
    db = Database(Settings(data_dir=Path(env["CARTAG_DATA_DIR"])).resolved_database_url)
    upgrade(db)
    return db


@pytest.mark.parametrize(
    "url", ["http://", "http://[::1/", "http://exa mple.com/", "http://a/\x01"]
)
def test_a_bad_redelivery_url_changes_nothing(env: dict[str, str], url: str) -> None:
    db = _db(env)
    hook = "https://hooks.example/cartag?token=t0k"
    job_id = finished_job(db, hook, status="done", callback_status="failed:http_500")
    result = CliRunner().invoke(app, ["callbacks", "redeliver", job_id, "--url", url], env=env)
    _refused(result, "--url")
    with db.read() as session:
        job = job_repo.get_job(session, job_id)
        assert (job.callback_url, job.callback_status) == (hook, "failed:http_500")
    db.dispose()


def test_pending_takes_no_url(env: dict[str, str]) -> None:
    args = ["callbacks", "redeliver", "--pending", "--url", "https://hooks.example/x"]
    _refused(CliRunner().invoke(app, args, env=env), "--url", "--pending")


@pytest.mark.parametrize("name", ["", "   ", "a\nb", "a\x01b", "x" * 129])
def test_a_key_name_is_one_printable_line(env: dict[str, str], name: str) -> None:
    args = ["keys", "create", "--role", "fixer", "--name", name]
    _refused(CliRunner().invoke(app, args, env=env), "name")
    db = _db(env)
    with db.read() as session:
        assert apikeys.list_keys(session) == []
    db.dispose()


def test_revoking_a_key_twice_keeps_the_first_time(env: dict[str, str]) -> None:
    db = _db(env)
    first = dt.datetime(2026, 12, 1, tzinfo=dt.UTC)
    with db.write() as session:
        row, _ = apikeys.create_key(session, name="ci", roles=["fixer"], now=first)
        prefix = row.prefix
        apikeys.revoke_key(session, prefix, first)
    result = CliRunner().invoke(app, ["keys", "revoke", prefix], env=env)
    assert result.exit_code == 0, result.output
    assert "revoked already, at 2026-12-01 00:00 UTC" in result.output
    with db.read() as session:
        [key] = apikeys.list_keys(session)
        assert key.revoked_at == first
    db.dispose()


@pytest.mark.parametrize("url", ["sqlite://", "sqlite:///:memory:"])
def test_an_in_memory_database_is_refused(env: dict[str, str], url: str) -> None:
    result = CliRunner().invoke(
        app, ["keys", "create", "--role", "admin"], env={**env, "CARTAG_DATABASE_URL": url}
    )
    _refused(result, "CARTAG_DATABASE_URL", "in-memory")


def test_serve_refuses_a_busy_port_and_a_bad_host_before_loading(env: dict[str, str]) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = CliRunner().invoke(app, ["serve", "--port", str(port)], env=env)
        _refused(result, "--port", f"127.0.0.1:{port}")
    result = CliRunner().invoke(app, ["serve", "--host", "999.1.1.1", "--port", "0"], env=env)
    _refused(result, "--host")
    # Nothing was made: the store is opened after the address is checked.
    assert not (Path(env["CARTAG_DATA_DIR"]) / "cartag.db").exists()


@pytest.mark.parametrize(
    ("extra", "words"),
    [
        (["--add-fixes-since", "2099-01-01"], ["--add-fixes-since", "in the future"]),
        (["--far-threshold", "0.3"], ["--far-threshold", "--candidates"]),
        (["--candidate-limit", "5"], ["--candidate-limit", "--candidates"]),
        (["--candidates", "fix-rate-jump", "--far-threshold", "0.3"], ["far-from-training"]),
        (["--candidates", "far-from-training", "--far-threshold", "inf"], ["finite"]),
    ],
)
def test_dataset_create_refuses_options_that_would_do_nothing(
    env: dict[str, str], extra: list[str], words: list[str]
) -> None:
    # Each was accepted and silently ignored (or, for a future date, added no fix).
    args = ["dataset", "create", "cars", "--from", "cars@1", *extra]
    _refused(CliRunner().invoke(app, args, env=env), *words)


@pytest.mark.parametrize("revision", ["", "nosuch", "0999"])
def test_db_upgrade_names_the_revisions_and_leaves_a_fresh_data_dir(
    env: dict[str, str], revision: str
) -> None:
    # "" gave the reason "AssertionError"; any unknown one left an empty cartag.db behind.
    result = CliRunner().invoke(app, ["db", "upgrade", revision], env=env)
    _refused(result, "is not a revision", "head", "0001")
    assert not (Path(env["CARTAG_DATA_DIR"]) / "cartag.db").exists()


def test_a_labels_file_that_is_not_text_is_called_so(env: dict[str, str], tmp_path: Path) -> None:
    folder = tmp_path / "photos"
    folder.mkdir()
    (folder / "a.jpg").write_bytes(b"\xff\xd8\xff")
    labels = tmp_path / "labels.csv"
    labels.write_bytes(b"\x89PNG\r\n\x1a\n\x00\xff\xfe")
    result = CliRunner().invoke(app, ["evaluate", str(folder), "--labels", str(labels)], env=env)
    _refused(result, "is not UTF-8 text", "labels CSV")


def test_add_reference_leaves_a_registered_version_alone(env: dict[str, str]) -> None:
    folder = Path(env["CARTAG_DATA_DIR"]) / "models" / "bundled-x"
    folder.mkdir(parents=True)
    (folder / "config.json").write_text("{}")
    result = CliRunner().invoke(app, ["models", "add-reference", str(folder)], env=env)
    _refused(result, "registered version's folder", "copy it")
    assert sorted(p.name for p in folder.iterdir()) == ["config.json"]
