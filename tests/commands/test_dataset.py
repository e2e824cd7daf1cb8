"""``cartag dataset``: import, list, show, freeze, export, create — and clear errors."""

from __future__ import annotations

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
from cartag.store.db import Database, upgrade
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
