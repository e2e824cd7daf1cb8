"""``cartag dataset``: import, list, show, freeze, export, create — and clear errors."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cartag.cli import app
from cartag.clock import FakeClock
from cartag.imaging.decode import decode_image
from cartag.imaging.keys import content_sha256, phash
from cartag.pipeline import fixes as fix_service
from cartag.pipeline.fixes import Author
from cartag.store import datasets, model_versions
from cartag.store.db import Database, upgrade
from tests.support.candidates import daily, fix_rate_history, stored_image
from tests.support.factories import NOW, add_image
from tests.support.http_server import ImageServer
from tests.support.shared_root import make_data_root
from tests.training.dataset_images import pattern_jpeg


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    return {
        "CARTAG_DATA_DIR": str(tmp_path / "data"),
        "CARTAG_ALLOWED_NETWORKS": "127.0.0.0/8",
        "CARTAG_ENGINE": "torch",
        "CARTAG_DATASET_NEAR_DUPLICATE_DISTANCE": "6",
        "COLUMNS": "200",
    }


@pytest.fixture
def server() -> Iterator[ImageServer]:
    with ImageServer() as srv:
        yield srv


def _photos(tmp_path: Path) -> Path:
    root = tmp_path / "photos"
    for i in range(12):
        folder = root / ("Dealer" if i % 3 else "Stock")
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"p{i:02d}.jpg").write_bytes(pattern_jpeg(200 + i))
    return root


def _run(env: dict[str, str], *args: str) -> tuple[int, str]:
    result = CliRunner().invoke(app, ["dataset", *args], env=env)
    return result.exit_code, result.output


def test_walkthrough_import_freeze_export_create(
    env: dict[str, str], tmp_path: Path, server: ImageServer
) -> None:
    root = _photos(tmp_path)
    code, output = _run(env, "import", "cars", "--folder", str(root))
    assert code == 0, output
    assert "created cars@1 (draft)" in output
    assert "too_small" in output and "class balance: image_type" in output
    assert "most suspicious" in output  # ranked with the real backbone

    code, output = _run(env, "list")
    assert code == 0 and "cars@1" in output and "draft" in output
    code, output = _run(env, "list", "trucks")
    assert code == 0 and "no dataset named 'trucks'; there are: cars" in output

    code, output = _run(env, "freeze", "cars")
    assert code == 0 and "froze cars@1: manifest sha256" in output
    code, output = _run(env, "freeze", "cars@1")
    assert code == 2 and "frozen" in output

    manifest = tmp_path / "m.json"
    code, output = _run(env, "export", "cars@1", "--out", str(manifest))
    assert code == 0, output
    document = json.loads(manifest.read_text())
    assert document["ref"] == "cars@1" and len(document["items"]) == 12
    assert len(document["manifest_sha256"]) == 64
    # "-" is standard output: it used to write a file named "-" in the working folder.
    result = CliRunner().invoke(app, ["dataset", "export", "cars@1", "--out", "-"], env=env)
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == document
    assert "wrote 12 items of cars@1 to standard output" in result.stderr
    assert not Path("-").exists()

    # A fix made through the store on an image served by the local server.
    db = Database(f"sqlite:///{tmp_path / 'data' / 'cartag.db'}")
    upgrade(db)
    data = pattern_jpeg(300)
    server.add_file("/d1/l/new.jpg", data)
    image = add_image(
        db,
        url=server.url("/d1/l/new.jpg"),
        content_sha256=content_sha256(data),
        phash=phash(decode_image(data, max_pixels=10**8).image),
    )
    with db.write() as session:
        fix_service.apply_fix(
            session, image_key=image.image_key, advertiser_id="d1", author=Author("alice"),
            scope="global", image_type="Stock", color="Red", comment=None, clock=FakeClock(NOW),
        )  # fmt: skip
    db.dispose()

    code, output = _run(
        env, "create", "cars", "--from", "cars@1", "--add-fixes-since", "2026-01-01",
        "--test-set", "advertiser=d1", "--no-rank",
    )  # fmt: skip
    assert code == 0, output
    assert "created cars@2" in output and "1 fixes of 1 images" in output
    assert "added 1 new images, kept 12 from the parent" in output

    code, output = _run(env, "show", "cars@2", "--json")
    assert code == 0, output
    shown = json.loads(output)
    assert shown["parent"] == "cars@1" and shown["items"] == {"included": 13}
    assert shown["stats"]["split"]["counts"]["test:advertiser=d1"] == 1
    code, output = _run(env, "show", "cars@2")
    assert code == 0 and "test sets: advertiser=d1" in output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["show", "cars@x"], "NAME@NUMBER"),
        (["show", "nothing"], "no dataset named"),
        (["freeze", "cars@4"], "no dataset version"),
        (["import", "cars", "--folder", "/nonexistent"], "not a folder"),
        (["import", "cars", "--folder", ".", "--test-set", "dealer"], "advertiser=ID"),
        (["import", "cars", "--folder", ".", "--crop", "smart"], "letterbox, none"),
        (["create", "cars", "--from", "cars@1", "--add-fixes-since", "soon"], "last-retrain"),
        (["create", "cars", "--from", "cars@1"], "no dataset version"),
        (["import", "cars", "--folder", ".", "--placeholders", "-1"], "--placeholders"),
        (["create", "cars", "--from", "cars@1", "--candidates", "drift"], "--candidates 'drift'"),
        (["create", "cars", "--from", "cars@1", "--candidate-limit", "0"], "--candidate-limit"),
        (["create", "cars", "--from", "cars@1", "--far-threshold", "-1"], "--far-threshold"),
    ],
)
def test_bad_input_exits_2_with_a_message(
    env: dict[str, str], args: list[str], message: str
) -> None:
    code, output = _run(env, *args)
    assert code == 2, output
    assert message in output and "Traceback" not in output


def test_create_from_a_draft_is_refused(env: dict[str, str], tmp_path: Path) -> None:
    assert _run(env, "import", "cars", "--folder", str(_photos(tmp_path)), "--no-rank")[0] == 0
    code, output = _run(env, "create", "cars", "--from", "cars@1")
    assert code == 2 and "freeze it first" in output


def test_import_with_generated_placeholders(env: dict[str, str], tmp_path: Path) -> None:
    root = _photos(tmp_path)
    code, output = _run(
        env, "import", "cars", "--folder", str(root), "--no-rank",
        "--placeholders", "8", "--placeholder-seed", "5",
    )  # fmt: skip
    assert code == 0, output
    assert "generated 8 placeholder cards (seed 5" in output
    code, output = _run(env, "show", "cars@1", "--json")
    shown = json.loads(output)
    assert shown["stats"]["placeholders"] == {"generated": 8, "seed": 5}
    balance = shown["stats"]["class_balance"]["image_type"]
    assert balance["Placeholder"]["n"] >= 5 and balance["Placeholder"]["train"] >= 1


def test_shared_labels_writes_the_csv_evaluate_reads(env: dict[str, str], tmp_path: Path) -> None:
    root = tmp_path / "shared"
    make_data_root(root)
    out_csv = tmp_path / "all.csv"
    code, output = _run(env, "shared-labels", "--data", str(root), "--out", str(out_csv))
    assert code == 0, output
    assert out_csv.is_file() and "wrote" in output and "cartag evaluate" in output
    assert out_csv.read_text().splitlines()[0] == "path,image_type,color,source,group"


def test_shared_labels_refuses_a_root_without_the_sets(env: dict[str, str], tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    code, output = _run(
        env, "shared-labels", "--data", str(tmp_path / "empty"), "--out", str(tmp_path / "x.csv")
    )
    assert code == 2 and "error" in output
    assert not (tmp_path / "x.csv").exists()


def test_create_with_candidates_reads_the_production_far_threshold(
    env: dict[str, str], tmp_path: Path, server: ImageServer
) -> None:
    assert _run(env, "import", "cars", "--folder", str(_photos(tmp_path)), "--no-rank")[0] == 0
    assert _run(env, "freeze", "cars@1")[0] == 0
    # The serving model: production, a folder registered in place.
    folder = tmp_path / "model-m7"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    db = Database(f"sqlite:///{tmp_path / 'data' / 'cartag.db'}")
    upgrade(db)
    now = dt.datetime.now(dt.UTC)
    with db.write() as session:
        model_versions.add_version(
            session, version="m7", path=str(folder), files_sha256="0" * 64, status="registered",
            card={}, metrics={}, dataset_ref=None, created_by="test", now=now,
        )  # fmt: skip
        model_versions.point_alias(
            session, "production", "m7", by="test", reason="initial", now=now
        )
    today = now.date()
    recent = today - dt.timedelta(days=6)
    fix_rate_history(
        db,
        "jumpy",
        daily(recent - dt.timedelta(days=28), recent - dt.timedelta(days=1), 100, 1)
        | daily(recent, today, 100, 5),
    )
    for name, seed, fields in [
        ("unsure", 500, {"advertiser": "jumpy", "confidence": 0.3}),
        ("far", 501, {"advertiser": "calm", "novelty": 0.7}),
    ]:
        data = pattern_jpeg(seed)
        server.add_file(f"/{name}.jpg", data)
        stored_image(
            db, url=server.url(f"/{name}.jpg"), data=data, seen_at=now - dt.timedelta(hours=1),
            **fields,
        )  # fmt: skip
    db.dispose()

    both = ["--candidates", "fix-rate-jump", "--candidates", "far-from-training", "--no-rank"]
    code, output = _run(env, "create", "cars", "--from", "cars@1", *both)
    assert code == 2, output
    assert "no usable reference far_threshold" in output and "--far-threshold" in output

    (folder / "config.json").write_text(json.dumps({"reference": {"far_threshold": 0.35}}))
    code, output = _run(env, "create", "cars", "--from", "cars@1", *both)
    assert code == 0, output
    assert "candidates fix-rate-jump" in output and "1 considered, 1 added flagged" in output
    assert "jumpy: 5.0% recently (35/700) vs 1.0% baseline (28/2800)" in output
    assert "far threshold 0.35 from" in output and "(production m7)" in output

    code, output = _run(env, "show", "cars@2", "--json")
    shown = json.loads(output)
    assert shown["items"] == {"included": 12, "flagged": 2}
    assert shown["stats"]["candidates"]["far_from_training"]["added"] == 1

    # An explicit threshold wins; above every image's novelty, none is far.
    code, output = _run(
        env, "create", "cars", "--from", "cars@1", "--candidates", "far-from-training",
        "--far-threshold", "0.9", "--candidate-days", "3", "--no-rank",
    )  # fmt: skip
    assert code == 0, output
    assert "far threshold 0.9 from --far-threshold" in output
    assert "candidates far-from-training (seen since" in output and "0 considered" in output


def test_import_says_which_label_rows_matched_no_image(env: dict[str, str], tmp_path: Path) -> None:
    root = _photos(tmp_path)
    labels = tmp_path / "labels.csv"
    labels.write_text("path,image_type\nDealer/p01.jpg,Stock\nnope/p99.jpg,Dealer\nx.jpg,Dealer\n")
    code, output = _run(
        env, "import", "cars", "--folder", str(root), "--labels", str(labels), "--no-rank"
    )
    assert code == 0, output
    text = " ".join(output.split())
    assert "warning: 2 row(s) of" in text and "were ignored" in text


def test_shared_labels_never_writes_over_the_database(env: dict[str, str], tmp_path: Path) -> None:
    out = Path(env["CARTAG_DATA_DIR"]) / "cartag.db"
    code, output = _run(env, "shared-labels", "--data", str(tmp_path), "--out", str(out))
    assert code == 2 and "cartag's database" in output


def _stored_version(tmp_path: Path, name: str = "cars") -> str:
    """A draft dataset version (no items) in the env fixture's store; returns its ref."""
    (tmp_path / "data").mkdir(exist_ok=True)
    db = Database(f"sqlite:///{tmp_path / 'data' / 'cartag.db'}")
    try:
        upgrade(db)
        with db.write() as session:
            return datasets.create_version(session, name, created_by="t", now=NOW).ref
    finally:
        db.dispose()


def test_export_replaces_its_target_whole_never_in_place(
    env: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # --out FILE was written in place: an export interrupted part-way left a truncated
    # manifest where the previous one was, and a reader could see half of one.
    ref = _stored_version(tmp_path)
    target = tmp_path / "out" / "manifest.json"
    target.parent.mkdir()
    target.write_text('{"previous": true}')
    reader = tmp_path / "reader.json"
    reader.hardlink_to(target)  # what a reader that opened the old file still sees

    code, output = _run(env, "export", ref, "--out", str(target))
    assert code == 0, output
    assert json.loads(target.read_text())["ref"] == ref
    assert json.loads(reader.read_text()) == {"previous": True}  # not overwritten in place
    assert sorted(p.name for p in target.parent.iterdir()) == ["manifest.json"]

    # The rename fails (a full disk, Ctrl-C before it): the old file stays, whole, and no
    # temporary file is left beside it.
    target.write_text('{"previous": true}')

    def failing(src: object, dst: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("os.replace", failing)
    code, output = _run(env, "export", ref, "--out", str(target))
    assert code == 2 and "cannot write --out" in output and "No space left" in output
    assert target.read_text() == '{"previous": true}'
    assert sorted(p.name for p in target.parent.iterdir()) == ["manifest.json"]
    monkeypatch.undo()

    # A link is followed: its target gets the manifest, the link stays a link.
    link = tmp_path / "link.json"
    link.symlink_to(target)
    code, output = _run(env, "export", ref, "--out", str(link))
    assert code == 0, output
    assert link.is_symlink() and json.loads(target.read_text())["ref"] == ref
