"""Building dataset versions end to end: import a folder, then extend it with fixes
served by a real local image server, through filters, crop, split and ranking."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from cartag.clock import FakeClock
from cartag.errors import ConflictError, InputError, NotFoundError
from cartag.imaging.decode import decode_image
from cartag.imaging.keys import content_sha256, phash
from cartag.models.classifier import Classifier, EmbeddingClassifier
from cartag.pipeline import fixes as fix_service
from cartag.pipeline.fixes import Author
from cartag.settings import Settings
from cartag.store import datasets as repo
from cartag.store.blobs import LocalBlobStore
from cartag.store.db import Database
from cartag.store.embeddings import load_embeddings
from cartag.store.tables import DatasetItemRow
from cartag.training.datasets.dataset_build import BuildOptions, DatasetBuilder
from cartag.training.datasets.dataset_inputs import (
    parse_cutoff,
    parse_test_set,
    placeholder_candidates,
)
from tests.support.factories import NOW, add_image
from tests.support.http_server import ImageServer
from tests.support.images import jpeg_bytes, noise_jpeg_bytes
from tests.training.dataset_images import pattern_jpeg


@pytest.fixture
def server() -> Iterator[ImageServer]:
    with ImageServer() as srv:
        yield srv


@pytest.fixture
def dataset_settings(settings: Settings) -> Settings:
    return settings.model_copy(update={"dataset_near_duplicate_distance": 6})


def _import_folder(tmp_path: Path) -> Path:
    """12 distinct pictures in Dealer/ and Stock/ folders."""
    root = tmp_path / "photos"
    for i in range(12):
        folder = root / ("Dealer" if i % 3 else "Stock")
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"p{i:02d}.jpg").write_bytes(pattern_jpeg(100 + i))
    return root


def _builder(settings: Settings, db: Database, clock: FakeClock, embedder: Any = None) -> Any:
    return DatasetBuilder(
        settings, db, LocalBlobStore(settings.data_dir / "blobs"), clock=clock, embedder=embedder
    )


def _serve_fixed(
    db: Database,
    server: ImageServer,
    path: str,
    data: bytes,
    *,
    when: dt.datetime,
    scope: str = "global",
    advertiser: str = "d1",
    image_type: str | None = "Dealer",
    color: str | None = None,
    served: bytes | None = None,
    user: str = "alice",
) -> int:
    """Serve an image, store it as classified, fix it; returns the audit id."""
    server.add_file(path, served if served is not None else data)
    try:
        ph = phash(decode_image(data, max_pixels=10**8).image)
    except Exception:  # noqa: BLE001 - unreadable bytes simply have no pHash
        ph = None
    image = add_image(
        db, url=server.url(path), content_sha256=content_sha256(data), phash=ph, image_type="Stock"
    )
    with db.write() as session:
        audit = fix_service.apply_fix(
            session,
            image_key=image.image_key,
            advertiser_id=advertiser,
            author=Author(user),
            scope=scope,
            image_type=image_type,
            color=color,
            comment=None,
            clock=FakeClock(when),
        )
        return audit.id


def _items(db: Database, ref: str) -> list[DatasetItemRow]:
    with db.read() as session:
        return repo.list_items(session, ref)


def test_import_a_folder_labels_from_folder_names_and_csv(
    sqlite_db: Database, dataset_settings: Settings, tmp_path: Path
) -> None:
    root = _import_folder(tmp_path)
    csv_path = tmp_path / "labels.csv"
    csv_path.write_text(
        "path,color,listing_id\nphotos/Dealer/p01.jpg,Red,L1\nDealer/p02.jpg,silver,L1\n"
        "photos/Dealer/missing.jpg,Red,\n",
        encoding="utf-8",
    )
    builder = _builder(dataset_settings, sqlite_db, FakeClock(NOW))
    report = builder.import_folder(BuildOptions("cars", rank=False), root, [csv_path])
    assert report.ref == "cars@1"
    items = {i.provenance["path"]: i for i in _items(sqlite_db, "cars@1")}
    assert len(items) == 12
    p1, p2 = items["photos/Dealer/p01.jpg"], items["photos/Dealer/p02.jpg"]
    assert (p1.image_type, p1.color, p2.color) == ("Dealer", "Red", "Grey")
    assert items["photos/Stock/p00.jpg"].image_type == "Stock"
    # Same listing id: same group, same side.
    assert p1.group_key == p2.group_key and p1.split == p2.split
    assert {i.split for i in items.values()} == {"train", "test"}
    assert report.stats["import"]["label_rows_without_file"] == 1
    assert report.stats["ranking"] == {"skipped": "ranking was not requested"}
    assert LocalBlobStore(dataset_settings.data_dir / "blobs").exists(p1.blob_path)


def test_import_a_folder_of_links_labels_them_by_their_own_paths(
    sqlite_db: Database, dataset_settings: Settings, tmp_path: Path
) -> None:
    # A selection of a larger collection made of symbolic links: each link's target lies
    # outside the imported folder (it raised ValueError from Path.relative_to).
    photos = _import_folder(tmp_path)
    root = tmp_path / "selection"
    for i in (1, 2, 3):
        target = photos / ("Dealer" if i % 3 else "Stock") / f"p{i:02d}.jpg"
        link = root / "Red" / target.name
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(target)
    csv_path = tmp_path / "labels.csv"
    csv_path.write_text(
        "path,image_type\nselection/Red/p01.jpg,Dealer\nRed/p02.jpg,Dealer\n"
        f"{root / 'Red' / 'p03.jpg'},Stock\n",
        encoding="utf-8",
    )
    builder = _builder(dataset_settings, sqlite_db, FakeClock(NOW))
    report = builder.import_folder(BuildOptions("cars", rank=False), root, [csv_path])
    items = {i.provenance["path"]: i for i in _items(sqlite_db, report.ref)}
    assert {p: (i.image_type, i.color) for p, i in items.items()} == {
        "selection/Red/p01.jpg": ("Dealer", "Red"),
        "selection/Red/p02.jpg": ("Dealer", "Red"),
        "selection/Red/p03.jpg": ("Stock", "Red"),
    }
    assert report.stats["import"]["label_rows_without_file"] == 0


def test_two_links_to_one_photo_in_two_color_folders_are_a_conflict(
    sqlite_db: Database, dataset_settings: Settings, tmp_path: Path
) -> None:
    # Labels were keyed by the links' target: the last folder's label won for both links
    # and the photo was trained on as that color, where a copy of it is flagged.
    photos = _import_folder(tmp_path)
    root = tmp_path / "selection"
    for color, names in (("Red", ("p01", "p02")), ("Blue", ("p01", "p04"))):
        (root / color).mkdir(parents=True)
        for name in names:
            (root / color / f"{name}.jpg").symlink_to(photos / "Dealer" / f"{name}.jpg")
    builder = _builder(dataset_settings, sqlite_db, FakeClock(NOW))
    report = builder.import_folder(BuildOptions("cars", rank=False), root)
    items = _items(sqlite_db, report.ref)
    [twice] = [i for i in items if i.content_sha256 == content_sha256(pattern_jpeg(101))]
    assert (twice.status, twice.reason) == ("flagged", "conflict")
    said = {c["path"]: c["labels"] for c in twice.provenance["conflict"]}
    assert said == {
        "selection/Red/p01.jpg": [None, "Red"],
        "selection/Blue/p01.jpg": [None, "Blue"],
    }
    assert report.stats["filters"]["conflict"] == 1


def test_import_refuses_bad_input(
    sqlite_db: Database, dataset_settings: Settings, tmp_path: Path
) -> None:
    builder = _builder(dataset_settings, sqlite_db, FakeClock(NOW))
    with pytest.raises(InputError, match="not a folder"):
        builder.import_folder(BuildOptions("cars"), tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="no image files"):
        builder.import_folder(BuildOptions("cars"), tmp_path / "empty")
    root = _import_folder(tmp_path)
    bad = tmp_path / "bad.csv"
    bad.write_text("path,color\nphotos/Dealer/p01.jpg,Mauve\n", encoding="utf-8")
    with pytest.raises(InputError, match="bad.csv:2"):
        builder.import_folder(BuildOptions("cars"), root, [bad])
    with pytest.raises(InputError, match="lowercase"):
        builder.import_folder(BuildOptions("Cars!"), root)


def test_create_extends_the_parent_with_fixes_since_the_cutoff(
    db: Database,
    dataset_settings: Settings,
    tmp_path: Path,
    server: ImageServer,
    classifier: Classifier,
) -> None:
    clock = FakeClock(NOW)
    root = _import_folder(tmp_path)
    _builder(dataset_settings, db, clock).import_folder(BuildOptions("cars", rank=False), root)
    with db.write() as session:
        repo.freeze(session, "cars@1", NOW)
    parent = {i.provenance["path"]: i for i in _items(db, "cars@1")}
    later = NOW + dt.timedelta(hours=1)

    # Before the cutoff: never added.
    _serve_fixed(db, server, "/old.jpg", pattern_jpeg(1), when=NOW - dt.timedelta(hours=1))
    # Two photos of one listing of advertiser d1 (a declared test set).
    audit_a = _serve_fixed(db, server, "/d1/l1/a.jpg", pattern_jpeg(2), when=later)
    _serve_fixed(db, server, "/d1/l1/b.jpg", pattern_jpeg(3), when=later, image_type="Stock")
    # A letterboxed photo: cropped into a new blob.
    boxed = pattern_jpeg(4, bars=20)
    _serve_fixed(db, server, "/d2/l/boxed.jpg", boxed, when=later, advertiser="d2")
    # The exact bytes of an imported Stock photo, fixed globally to Dealer: relabelled.
    stock = (root / "Stock" / "p03.jpg").read_bytes()
    _serve_fixed(db, server, "/d2/l/same.jpg", stock, when=later, advertiser="d2")
    # A re-encoded copy of an imported Dealer photo that advertiser d3 calls Stock: conflict.
    copy = pattern_jpeg(101, quality=40)
    _serve_fixed(
        db, server, "/d3/l/copy.jpg", copy, when=later, scope="advertiser", advertiser="d3",
        image_type="Stock",
    )  # fmt: skip
    # Too small, unreadable, gone, and an image that changed since it was fixed.
    _serve_fixed(db, server, "/d4/small.jpg", jpeg_bytes(40, 30), when=later, advertiser="d4")
    _serve_fixed(db, server, "/d4/html.jpg", b"<html>oops</html>", when=later, advertiser="d4")
    _serve_fixed(db, server, "/d4/gone.jpg", pattern_jpeg(5), when=later, advertiser="d4")
    server.add_status("/d4/gone.jpg", 404)
    _serve_fixed(
        db, server, "/d4/changed.jpg", pattern_jpeg(6), when=later, advertiser="d4",
        served=pattern_jpeg(7),
    )  # fmt: skip

    assert isinstance(classifier, EmbeddingClassifier)
    clock = FakeClock(NOW + dt.timedelta(hours=2))
    builder = _builder(dataset_settings, db, clock, embedder=classifier.backbone)
    options = BuildOptions("cars", user="bob", test_advertisers=["d1"])
    report = builder.create(options, parent_ref="cars", fixes_since="last-retrain")
    assert report.ref == "cars@2"
    stats = report.stats
    assert stats["fixes"]["since"] == NOW.isoformat() and stats["fixes"]["fixes"] == 9
    assert stats["downloads"]["failed"] == 1
    assert stats["downloads"]["failures"][0]["reason"] == "http_404"
    assert stats["downloads"]["changed_since_fix"] == 1
    assert stats["filters"] == {
        "duplicate": 0,
        "unreadable": 1,
        "too_small": 1,
        "near_duplicate": 0,
        "conflict": 2,
        "relabelled": 1,
    }
    assert stats["crop"] == {"method": "letterbox", "cropped": 1}

    items = _items(db, "cars@2")
    by_url = {i.provenance.get("url"): i for i in items if i.provenance.get("source") == "fix"}
    copied = {i.provenance["path"]: i for i in items if i.provenance.get("source") == "import"}
    assert server.url("/old.jpg") not in by_url
    assert len(copied) == 12
    assert all(i.provenance["from_version"] == "cars@1" for i in copied.values())
    # Parent splits are kept.
    assert all(copied[p].split == parent[p].split for p in parent)

    a, b = by_url[server.url("/d1/l1/a.jpg")], by_url[server.url("/d1/l1/b.jpg")]
    assert a.provenance["fix_audit_id"] == audit_a
    assert (a.provenance["user"], a.provenance["advertiser_id"], a.provenance["scope"]) == (
        "alice",
        "d1",
        "global",
    )
    assert a.split == b.split == "test:advertiser=d1" and a.group_key == b.group_key
    assert (a.status, b.image_type) == ("included", "Stock")

    cropped = by_url[server.url("/d2/l/boxed.jpg")]
    assert cropped.provenance["original_sha256"] == content_sha256(boxed)
    assert cropped.content_sha256 != content_sha256(boxed)
    # 160x160 with 20-px bars; JPEG ringing keeps a row or two of the bars' edges.
    assert cropped.width == 160 and 120 <= (cropped.height or 0) <= 126
    blobs = LocalBlobStore(dataset_settings.data_dir / "blobs")
    assert blobs.exists(cropped.blob_path) and blobs.exists(
        cropped.provenance["original_blob_path"]
    )

    relabelled = copied["photos/Stock/p03.jpg"]
    assert relabelled.image_type == "Dealer" and relabelled.status == "included"
    assert relabelled.provenance["relabelled"]["from"] == ["Stock", None]

    conflict = by_url[server.url("/d3/l/copy.jpg")]
    assert (conflict.status, conflict.reason) == ("flagged", "conflict")
    assert copied["photos/Dealer/p01.jpg"].status == "flagged"
    assert {i.reason for i in items if i.status == "excluded"} == {"too_small", "unreadable"}

    # Ranking ran on cached embeddings: every labelled non-excluded item is scored.
    scored = [i for i in items if i.status != "excluded"]
    assert all(i.suspicion is not None and i.model_label for i in scored)
    assert stats["ranking"]["backbone_id"] == classifier.backbone.backbone_id
    assert stats["top_suspicious"][0]["suspicion"] >= stats["top_suspicious"][-1]["suspicion"]
    assert stats["class_balance"]["image_type"]["Dealer"]["n"] > 0

    with db.read() as session:
        version = repo.get_version(session, "cars@2")
    assert (version.parent_ref, version.created_by, version.status) == ("cars@1", "bob", "draft")
    assert version.test_sets == [{"name": "advertiser=d1", "advertiser_id": "d1"}]
    assert version.fixes_since == NOW

    # Freeze it and extend again: nothing new since, the test set is inherited.
    with db.write() as session:
        repo.freeze(session, "cars@2", clock.now())
    clock.advance(60)
    again = builder.create(BuildOptions("cars", rank=False), parent_ref="cars@2", fixes_since=None)
    with db.read() as session:
        third = repo.get_version(session, again.ref)
    assert third.test_sets == version.test_sets
    assert len(_items(db, again.ref)) == len([i for i in items if i.status != "excluded"])


def test_a_fix_carries_its_color_to_a_copy_only_if_the_model_answered_it_alike(
    db: Database, dataset_settings: Settings, tmp_path: Path, server: ImageServer
) -> None:
    # The pHash is grey: a maker's render of the same car in another color passes it, so
    # a copy's color label needs the model's answers to agree (cartag.pipeline.fixes).
    clock = FakeClock(NOW)
    _builder(dataset_settings, db, clock).import_folder(
        BuildOptions("cars", rank=False), _import_folder(tmp_path)
    )
    _freeze(db, "cars@1")
    later = NOW + dt.timedelta(hours=1)
    answered = {"alike": "Red", "recolored": "Green", "unseen": None, "color-only": "Green"}
    for n, (name, copy_color) in enumerate(answered.items()):
        # Stored as answered Red; the URL now serves a re-encoded copy of the picture.
        fixed, copy = pattern_jpeg(201 + n), pattern_jpeg(201 + n, quality=40)
        _serve_fixed(
            db, server, f"/{name}.jpg", fixed, when=later, served=copy, color="Blue",
            image_type=None if name == "color-only" else "Dealer",
        )  # fmt: skip
        if copy_color is not None:  # the scraper's own later request of the copy
            add_image(db, content_sha256=content_sha256(copy), color=copy_color)

    clock = FakeClock(NOW + dt.timedelta(hours=2))
    report = _builder(dataset_settings, db, clock).create(
        BuildOptions("cars", rank=False), parent_ref="cars@1", fixes_since=NOW
    )
    assert report.stats["downloads"]["changed_since_fix"] == 0
    assert report.stats["downloads"]["color_not_carried"] == 3
    items = _items(db, report.ref)
    by_url = {i.provenance["url"]: i for i in items if i.provenance.get("source") == "fix"}
    alike = by_url[server.url("/alike.jpg")]
    assert (alike.image_type, alike.color) == ("Dealer", "Blue")
    assert "color_dropped" not in alike.provenance
    for name in ("recolored", "unseen"):
        item = by_url[server.url(f"/{name}.jpg")]
        assert (item.image_type, item.color) == ("Dealer", None)
        assert item.provenance["color_dropped"] == {"fixed": "Blue", "reason": "recolored_copy"}
    # A color fix whose color does not carry leaves nothing to add.
    assert server.url("/color-only.jpg") not in by_url


def test_ranking_embeds_at_the_services_draft_size(
    sqlite_db: Database, dataset_settings: Settings, tmp_path: Path, classifier: Classifier
) -> None:
    # The ranking caches its vectors under the serving backbone's id: an 800 x 600 JPEG
    # must be decoded as the service decodes it (1/4, 200 x 150), not at 320 px.
    assert isinstance(classifier, EmbeddingClassifier)
    root = tmp_path / "photos"
    photos = {}
    for i in range(4):
        folder = root / ("Dealer" if i % 2 else "Stock")
        folder.mkdir(parents=True, exist_ok=True)
        photos[i] = noise_jpeg_bytes(800, 600, seed=i)
        (folder / f"n{i}.jpg").write_bytes(photos[i])
    builder = _builder(dataset_settings, sqlite_db, FakeClock(NOW), embedder=classifier.backbone)
    builder.import_folder(BuildOptions("cars"), root)
    served = [
        decode_image(d, max_pixels=10**8, draft_size=classifier.draft_size()).image
        for d in photos.values()
    ]
    vectors = classifier.backbone.embed_images([classifier.prepare(im) for im in served])
    shas = [content_sha256(d) for d in photos.values()]
    with sqlite_db.read() as session:
        cached = load_embeddings(session, classifier.backbone.backbone_id, shas)
    assert set(cached) == set(shas)
    for sha, vector in zip(shas, vectors, strict=True):
        np.testing.assert_allclose(cached[sha], vector, atol=2e-2)  # float16 in the cache


def test_create_refuses_a_draft_parent_and_unknown_versions(
    sqlite_db: Database, dataset_settings: Settings, tmp_path: Path
) -> None:
    builder = _builder(dataset_settings, sqlite_db, FakeClock(NOW))
    builder.import_folder(BuildOptions("cars", rank=False), _import_folder(tmp_path))
    with pytest.raises(ConflictError, match="freeze it first"):
        builder.create(BuildOptions("cars"), parent_ref="cars@1", fixes_since=None)
    with pytest.raises(NotFoundError):
        builder.create(BuildOptions("cars"), parent_ref="cars@7", fixes_since=None)


def test_cutoff_and_test_set_parsing() -> None:
    assert parse_cutoff("last-retrain") == "last-retrain"
    assert parse_cutoff("2026-11-30") == dt.datetime(2026, 11, 30, tzinfo=dt.UTC)
    with pytest.raises(InputError, match="last-retrain or a date"):
        parse_cutoff("yesterday")
    assert parse_test_set("advertiser=dealer-42") == "dealer-42"
    with pytest.raises(InputError, match="advertiser=ID"):
        parse_test_set("listing=3")


def test_placeholders_are_added_as_generated_items_and_split_like_the_rest(
    sqlite_db: Database, dataset_settings: Settings, tmp_path: Path
) -> None:
    root = _import_folder(tmp_path)
    builder = _builder(dataset_settings, sqlite_db, FakeClock(NOW))
    options = BuildOptions("cars", rank=False, placeholders=12, placeholder_seed=3)
    report = builder.import_folder(options, root)
    items = _items(sqlite_db, "cars@1")
    generated = [i for i in items if i.provenance.get("source") == "generated"]
    kept = [i for i in generated if i.status == repo.INCLUDED]
    assert report.stats["placeholders"] == {"generated": 12, "seed": 3}
    assert len(generated) == 12 and len(items) == 24
    assert {(i.image_type, i.color) for i in generated} == {("Placeholder", None)}
    assert {i.provenance["generator"] for i in generated} == {"cartag.imaging.placeholders"}
    assert {i.provenance["seed"] for i in generated} == {3}
    assert sorted(i.provenance["index"] for i in generated) == list(range(12))
    # Flat cards can be near-duplicates of each other; the filter says so, never silently.
    assert len(kept) >= 8
    assert {i.split for i in kept} == {"train", "test"}
    blobs = LocalBlobStore(dataset_settings.data_dir / "blobs")
    assert all(blobs.exists(i.blob_path) for i in generated)
    assert report.stats["class_balance"]["image_type"]["Placeholder"]["n"] == len(kept)

    # Same count and seed: the same bytes, so a parent's cards are duplicates, not new items.
    _freeze(sqlite_db, "cars@1")
    again = builder.create(
        BuildOptions("cars", rank=False, placeholders=12, placeholder_seed=3),
        parent_ref="cars@1",
        fixes_since=None,
    )
    assert again.stats["added"] == 0
    more = builder.create(
        BuildOptions("cars", rank=False, placeholders=4, placeholder_seed=9),
        parent_ref="cars@1",
        fixes_since=None,
    )
    new = [
        i for i in _items(sqlite_db, more.ref)
        if i.provenance.get("seed") == 9 and i.status == repo.INCLUDED
    ]  # fmt: skip
    assert new and more.stats["added"] == len(new)


def _freeze(db: Database, ref: str) -> None:
    with db.write() as session:
        repo.freeze(session, ref, NOW)


def test_placeholder_candidates_are_deterministic() -> None:
    first = placeholder_candidates(3, seed=1)
    assert [c.sha256 for c in first] == [c.sha256 for c in placeholder_candidates(3, seed=1)]
    assert first[0].sha256 != placeholder_candidates(1, seed=2)[0].sha256
    assert placeholder_candidates(0) == []
    with pytest.raises(InputError, match="0 or more"):
        placeholder_candidates(-1)
