"""Dataset candidates end to end: the real builder proposes stored images for review,
downloaded from a local image server, flagged with the model's answer, in queue order."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from cartag.clock import FakeClock
from cartag.errors import InputError
from cartag.imaging.decode import decode_image
from cartag.imaging.keys import content_sha256, phash
from cartag.models.classifier import Classifier, EmbeddingClassifier
from cartag.pipeline import fixes as fix_service
from cartag.pipeline.fixes import Author
from cartag.settings import Settings
from cartag.store import datasets as repo
from cartag.store.advertisers import record_advertiser_images
from cartag.store.blobs import LocalBlobStore
from cartag.store.candidates import StoredImage
from cartag.store.db import Database
from cartag.store.review_queue import ItemFilter, list_items
from cartag.training.datasets.candidates import (
    KINDS,
    CandidateRequest,
    Known,
    candidate_suspicion,
    parse_kinds,
    phash_array,
    read_far_threshold,
)
from cartag.training.datasets.dataset_build import BuildOptions, DatasetBuilder
from cartag.training.datasets.fix_rate_jumps import window_start
from tests.support.candidates import daily, fix_rate_history, stored_image
from tests.support.factories import NOW
from tests.support.http_server import ImageServer
from tests.training.dataset_images import pattern_jpeg

TODAY = NOW.date()
RECENT = window_start(TODAY, 7)
BASELINE = RECENT - dt.timedelta(days=28)
SEEN = NOW - dt.timedelta(days=1)
LIMIT = 10


@pytest.fixture
def server() -> Iterator[ImageServer]:
    with ImageServer() as srv:
        yield srv


def _parent(db: Database, settings: Settings, tmp_path: Path) -> Path:
    """cars@1, frozen: 12 imported photos in Dealer/ and Stock/."""
    root = tmp_path / "photos"
    for i in range(12):
        folder = root / ("Dealer" if i % 3 else "Stock")
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"p{i:02d}.jpg").write_bytes(pattern_jpeg(100 + i))
    builder = _builder(settings, db)
    builder.import_folder(BuildOptions("cars", rank=False), root)
    with db.write() as session:
        repo.freeze(session, "cars@1", NOW)
    return root


def _builder(settings: Settings, db: Database, embedder: Any = None) -> DatasetBuilder:
    blobs = LocalBlobStore(settings.data_dir / "blobs")
    return DatasetBuilder(settings, db, blobs, clock=FakeClock(NOW), embedder=embedder)


def _served(
    db: Database,
    server: ImageServer,
    name: str,
    seed: int,
    *,
    served: bytes | None = None,
    data: bytes | None = None,
    **fields: Any,
) -> str:
    """A stored image of ``pattern_jpeg(seed)`` that the server serves at ``/name.jpg``."""
    data = data if data is not None else pattern_jpeg(seed)
    server.add_file(f"/{name}.jpg", served if served is not None else data)
    return stored_image(db, url=server.url(f"/{name}.jpg"), data=data, **fields)


def test_candidates_land_flagged_with_provenance_in_review_order(
    db: Database,
    settings: Settings,
    tmp_path: Path,
    server: ImageServer,
    classifier: Classifier,
) -> None:
    settings = settings.model_copy(update={"dataset_near_duplicate_distance": 6})
    root = _parent(db, settings, tmp_path)
    fix_rate_history(db, "jumpy", daily(BASELINE, RECENT, 100, 1) | daily(RECENT, TODAY, 100, 4))
    fix_rate_history(db, "steady", daily(BASELINE, TODAY, 100, 1))

    # A fix this build adds (by advertiser d9).
    fixed = _served(db, server, "fixed", 320, advertiser="d9", seen_at=SEEN)
    with db.write() as session:
        fix_service.apply_fix(
            session,
            image_key=fixed,
            advertiser_id="d9",
            author=Author("alice"),
            scope="global",
            image_type="Stock",
            color=None,
            comment=None,
            clock=FakeClock(NOW - dt.timedelta(minutes=30)),
        )

    def jumpy(name: str, seed: int, confidence: float, **fields: Any) -> str:
        return _served(
            db, server, name, seed, advertiser="jumpy", seen_at=SEEN, confidence=confidence,
            **fields,
        )  # fmt: skip

    low = jumpy("low", 301, 0.3, novelty=0.95)  # also far: fix-rate-jump takes it first
    in_parent = jumpy("in_parent", 0, 0.2, data=(root / "Dealer" / "p01.jpg").read_bytes())
    same_as_fix = jumpy("same_as_fix", 0, 0.25, data=pattern_jpeg(320))
    changed = jumpy("changed", 305, 0.5, served=pattern_jpeg(306))
    gone = jumpy("gone", 307, 0.55)
    server.add_status("/gone.jpg", 404)
    mid = jumpy("mid", 302, 0.6, image_type="Stock", color=None)
    # Now served re-encoded, a copy the model never answered: its proposed color goes.
    high = jumpy("high", 303, 0.9, served=pattern_jpeg(303, quality=40))
    # The steady advertiser's unsure image is no candidate of fix-rate-jump...
    _served(db, server, "steady", 310, advertiser="steady", seen_at=SEEN, confidence=0.1)
    # ... but its far images are, farthest first; a Placeholder answer carries no color.
    far = _served(db, server, "far", 311, advertiser="steady", seen_at=SEEN, novelty=0.9)
    farther_down = _served(
        db, server, "far2", 312, advertiser="steady", seen_at=SEEN, novelty=0.6,
        image_type="Placeholder", color="Red",
    )  # fmt: skip
    _served(db, server, "near", 313, advertiser="steady", seen_at=SEEN, novelty=0.2)

    assert isinstance(classifier, EmbeddingClassifier)
    builder = _builder(settings, db, embedder=classifier.backbone)
    request = CandidateRequest(KINDS, limit=LIMIT, far_threshold=0.35, threshold_source="test")
    report = builder.create(
        BuildOptions("cars", user="bob"),
        parent_ref="cars",
        fixes_since=NOW - dt.timedelta(hours=1),
        candidates=request,
    )

    stats = report.stats["candidates"]
    assert stats["window"] == {"since": RECENT.isoformat(), "days": 7}
    jump = stats["fix_rate_jump"]
    assert [a["advertiser_id"] for a in jump["advertisers"]] == ["jumpy"]
    assert jump["advertisers"][0]["recent"] == {"answers": 700, "fixes": 28, "rate": 0.04}
    assert (jump["considered"], jump["picked"], jump["added"]) == (7, 5, 3)
    assert jump["skipped"] == {"in_parent": 1, "fixed": 1, "changed": 1, "download_failed": 1}
    far_stats = stats["far_from_training"]
    assert (far_stats["considered"], far_stats["picked"], far_stats["added"]) == (3, 2, 2)
    assert far_stats["skipped"] == {"other_kind": 1}
    assert (far_stats["far_threshold"], far_stats["threshold_source"]) == (0.35, "test")

    with db.read() as session:
        items = repo.list_items(session, report.ref)
        queue = list_items(session, report.ref, ItemFilter(flagged_only=True)).items
    by_key = {i.provenance.get("image_key"): i for i in items}
    proposed = [i for i in items if i.provenance.get("source") == "candidate"]
    assert {i.provenance["image_key"] for i in proposed} == {low, mid, high, far, farther_down}
    assert all((i.status, i.reason) == ("flagged", "candidate") for i in proposed)
    # The parent's items and the fix are untouched by the proposals.
    assert all(i.status == "included" for i in items if i.provenance.get("source") == "import")
    assert [i.status for i in items if i.provenance.get("source") == "fix"] == ["included"]
    assert changed not in by_key and gone not in by_key and in_parent not in by_key
    assert same_as_fix not in by_key

    low_item = by_key[low]
    assert (low_item.image_type, low_item.color) == ("Dealer", "Red")
    assert low_item.provenance | {"url": None, "seen_at": None} == {
        "source": "candidate",
        "why": "fix_rate_jump",
        "rank": 0,
        "advertiser_id": "jumpy",
        "image_key": low,
        "url": None,
        "seen_at": None,
        "model_version": "test-model",
        "confidence": 0.3,
        "novelty": 0.95,
        "fix_rate": {
            "recent": {"answers": 700, "fixes": 28, "rate": 0.04},
            "baseline": jump["advertisers"][0]["baseline"],
        },
    }
    assert low_item.provenance["url"] == server.url("/low.jpg")
    assert (by_key[mid].image_type, by_key[mid].color) == ("Stock", None)
    assert (by_key[high].image_type, by_key[high].color) == ("Dealer", None)
    assert by_key[high].provenance["color_dropped"] == {
        "proposed": "Red",
        "reason": "recolored_copy",
    }
    assert (by_key[farther_down].image_type, by_key[farther_down].color) == ("Placeholder", None)
    assert by_key[far].provenance["why"] == "far_from_training"
    assert by_key[far].provenance["far_threshold"] == 0.35
    assert low_item.split is not None and low_item.split != "" and low_item.phash

    # Ranking ran (every live item is scored) but candidates keep their own place:
    # each kind in its order, the kinds interleaved, inside the (1, 2) band.
    assert all(i.model_label for i in items if i.status != "excluded")
    assert [i.provenance["image_key"] for i in queue] == [low, far, farther_down, mid, high]
    assert [i.suspicion for i in queue] == [
        candidate_suspicion(0, LIMIT),
        candidate_suspicion(0, LIMIT),
        candidate_suspicion(1, LIMIT),
        candidate_suspicion(3, LIMIT),
        candidate_suspicion(4, LIMIT),
    ]
    assert all(1 < (i.suspicion or 0) < 2 for i in queue)
    # The whole queue, as a reviewer pages it: most suspicious first.
    with db.read() as session:
        everything = list_items(session, report.ref, limit=100).items
    suspicions = [i.suspicion or 0.0 for i in everything]
    assert suspicions == sorted(suspicions, reverse=True)


def test_limit_round_robin_and_far_threshold_required(
    sqlite_db: Database, settings: Settings, tmp_path: Path, server: ImageServer
) -> None:
    db = sqlite_db
    _parent(db, settings, tmp_path)
    for adv in ("a1", "a2"):
        fix_rate_history(db, adv, daily(BASELINE, RECENT, 100, 0) | daily(RECENT, TODAY, 100, 2))
    a1 = [_served(db, server, f"a1-{i}", 400 + i, advertiser="a1", seen_at=SEEN,
                  confidence=0.1 + i / 10) for i in range(3)]  # fmt: skip
    a2 = [_served(db, server, f"a2-{i}", 410 + i, advertiser="a2", seen_at=SEEN,
                  confidence=0.15 + i / 10) for i in range(3)]  # fmt: skip
    with db.write() as session:  # a2 saw a1's least sure image too: proposed once
        record_advertiser_images(session, "a2", dict.fromkeys([a1[0]]), SEEN)
    builder = _builder(settings, db)
    with pytest.raises(InputError, match="far threshold") as info:
        builder.create(
            BuildOptions("cars", rank=False),
            parent_ref="cars",
            fixes_since=None,
            candidates=CandidateRequest(KINDS, limit=3),
        )
    assert info.value.field == "far_threshold"

    report = builder.create(
        BuildOptions("cars", rank=False),
        parent_ref="cars",
        fixes_since=None,
        candidates=CandidateRequest(("fix-rate-jump",), limit=3),
    )
    with db.read() as session:
        queue = list_items(session, report.ref, ItemFilter(flagged_only=True)).items
    # The advertisers take turns (equal recent rates: by id), each lowest confidence
    # first, until the limit.
    assert [i.provenance["image_key"] for i in queue] == [a1[0], a2[0], a1[1]]
    # A proposal needs both labels confirmed: it is in both queues, undecided.
    with db.read() as session:
        for name in ("image_type", "color"):
            page = list_items(session, report.ref, ItemFilter(queue=name, decided=False))
            assert [i.id for i in page.items][:3] == [i.id for i in queue]
    jump = report.stats["candidates"]["fix_rate_jump"]
    assert (jump["added"], jump["skipped"]) == (3, {"duplicate": 1})
    assert "far_from_training" not in report.stats["candidates"]


def test_parse_kinds_and_read_far_threshold(tmp_path: Path) -> None:
    assert parse_kinds(["far-from-training", "fix_rate_jump", "FAR-FROM-TRAINING"]) == (
        "far-from-training",
        "fix-rate-jump",
    )
    with pytest.raises(InputError, match="--candidates 'drift'.*fix-rate-jump") as info:
        parse_kinds(["drift"])
    assert info.value.field == "candidates"

    (tmp_path / "config.json").write_text(
        json.dumps({"reference": {"format": "cartag-reference/1", "far_threshold": 0.31}})
    )
    assert read_far_threshold(tmp_path) == 0.31
    for document in (
        {},
        {"reference": {"far_threshold": "high"}},
        {"reference": None},
        {"reference": {"far_threshold": -0.1}},
    ):
        (tmp_path / "config.json").write_text(json.dumps(document))
        with pytest.raises(
            InputError, match="no usable reference far_threshold.*--far-threshold.*add-reference"
        ):
            read_far_threshold(tmp_path)
    with pytest.raises(InputError, match="cannot read"):
        read_far_threshold(tmp_path / "missing")


def test_known_catches_copies_by_bytes_or_picture() -> None:
    def image(data: bytes, key: str = "k") -> StoredImage:
        return StoredImage(
            image_key=key, urls=[], content_sha256=content_sha256(data),
            phash=phash(decode_image(data, max_pixels=10**8).image), image_type="Dealer",
            color=None, confidence=None, novelty=None, model_version="m", advertiser_id="a",
            seen_at=NOW,
        )  # fmt: skip

    parent, fixed = image(pattern_jpeg(600)), image(pattern_jpeg(601), key="fixed-key")
    known = Known(
        parent_sha256=frozenset({parent.content_sha256 or ""}),
        parent_phash=phash_array([parent.phash]),
        fixed_keys=frozenset({"fixed-key"}),
        fixed_phash=phash_array([fixed.phash]),
        distance=6,
    )
    assert known.clash(parent) == "in_parent"
    assert known.clash(image(pattern_jpeg(600, quality=40))) == "in_parent"  # re-encoded
    assert known.clash(image(pattern_jpeg(601, quality=40))) == "fixed"
    assert known.clash(image(pattern_jpeg(602), key="fixed-key")) == "fixed"
    assert known.clash(image(pattern_jpeg(603))) is None
    assert Known().clash(parent) is None
