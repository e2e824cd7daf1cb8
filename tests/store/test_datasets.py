"""Dataset versions in the store: drafts, items, freezing, manifests, fixes since a cutoff."""

from __future__ import annotations

import datetime as dt

import pytest

from cartag.clock import FakeClock
from cartag.errors import ConflictError, InputError, NotFoundError
from cartag.pipeline import fixes as fix_service
from cartag.pipeline.fixes import Author
from cartag.store import datasets as repo
from cartag.store.db import Database
from cartag.store.tables import ModelAliasRow, ModelVersionRow
from tests.support.factories import NOW, add_image


def _item(n: int, **overrides: object) -> repo.NewItem:
    sha = f"{n:064x}"
    values: dict[str, object] = {
        "content_sha256": sha,
        "blob_path": f"sha256/{sha[:2]}/{sha[2:4]}/{sha}.jpg",
        "image_type": "Dealer",
        "color": "Red",
        "split": "train",
        "phash": f"{n:016x}",
        "provenance": {"source": "import", "path": f"x/{n}.jpg"},
    }
    values.update(overrides)
    return repo.NewItem(**values)  # type: ignore[arg-type]


def _version(db: Database, name: str = "cars", items: int = 3, **kwargs: object) -> str:
    with db.write() as session:
        version = repo.create_version(session, name, created_by="alice", now=NOW, **kwargs)  # type: ignore[arg-type]
        repo.add_items(session, version.ref, [_item(i) for i in range(items)])
        return version.ref


def test_versions_are_numbered_per_name_and_resolve_to_latest(db: Database) -> None:
    first = _version(db)
    with db.write() as session:
        repo.freeze(session, first, NOW)
    second = _version(db, parent_ref="cars")
    other = _version(db, name="bikes")
    assert (first, second, other) == ("cars@1", "cars@2", "bikes@1")
    with db.read() as session:
        assert repo.resolve_ref(session, "cars") == "cars@2"
        assert repo.get_version(session, second).parent_ref == "cars@1"
        assert [v.ref for v in repo.list_versions(session)] == ["bikes@1", "cars@1", "cars@2"]
        assert repo.item_counts(session, ["cars@2"]) == {"cars@2": {"included": 3}}


def test_bad_names_and_unknown_versions_are_clear_errors(db: Database) -> None:
    with db.read() as session:
        with pytest.raises(InputError, match="NAME@NUMBER"):
            repo.parse_ref("cars@x")
        with pytest.raises(NotFoundError, match="cartag dataset list"):
            repo.get_version(session, "cars@9")
        with pytest.raises(NotFoundError, match="no dataset named"):
            repo.get_version(session, "cars")
    with db.write() as session, pytest.raises(InputError, match="lowercase"):
        repo.create_version(session, "Bad Name", created_by="a", now=NOW)


def test_items_list_by_suspicion_and_status(db: Database) -> None:
    with db.write() as session:
        ref = repo.create_version(session, "cars", created_by="a", now=NOW).ref
        repo.add_items(
            session,
            ref,
            [
                _item(1, suspicion=0.2),
                _item(2, suspicion=1.5),
                _item(3),
                _item(4, status="excluded", reason="too_small"),
            ],
        )
    with db.read() as session:
        ranked = repo.list_items(session, ref, order="suspicion")
        assert [r.content_sha256[-1] for r in ranked] == ["2", "1", "3", "4"]
        excluded = repo.list_items(session, ref, status="excluded")
        assert [(r.reason, r.status) for r in excluded] == [("too_small", "excluded")]
        with pytest.raises(InputError):
            repo.list_items(session, ref, order="random")


def test_adding_the_same_image_twice_is_refused(db: Database) -> None:
    ref = _version(db)
    with db.write() as session, pytest.raises(ConflictError, match="already holds"):
        repo.add_items(session, ref, [_item(1)])


def test_freeze_hashes_the_canonical_manifest_and_locks_the_version(db: Database) -> None:
    ref = _version(db, items=4)
    with db.read() as session:
        draft_manifest = repo.manifest(session, ref)
    with db.write() as session:
        version = repo.freeze(session, ref, NOW + dt.timedelta(hours=1))
        assert version.status == "frozen"
    assert version.manifest_sha256 == repo.manifest_sha256(draft_manifest)
    assert [i["content_sha256"] for i in draft_manifest["items"]] == sorted(
        i["content_sha256"] for i in draft_manifest["items"]
    )
    with db.read() as session:
        items = repo.list_items(session, ref)
        exported = repo.export_manifest(session, ref)
    assert exported["manifest_sha256"] == version.manifest_sha256
    body = {k: v for k, v in exported.items() if k not in ("manifest_sha256", "stats")}
    assert repo.manifest_sha256(body) == version.manifest_sha256

    for write in (
        lambda s: repo.add_items(s, ref, [_item(99)]),
        lambda s: repo.update_items(s, ref, {items[0].id: {"image_type": "Stock"}}),
        lambda s: repo.set_stats(s, ref, {"x": 1}),
        lambda s: repo.freeze(s, ref, NOW),
    ):
        with db.write() as session, pytest.raises(ConflictError, match="frozen"):
            write(session)
    with db.read() as session:
        assert repo.list_items(session, ref)[0].image_type == "Dealer"


def test_a_version_with_nothing_to_train_on_is_not_frozen(db: Database) -> None:
    with db.write() as session:
        ref = repo.create_version(session, "cars", created_by="a", now=NOW).ref
        repo.add_items(
            session,
            ref,
            [
                _item(1, image_type=None, color=None),  # unlabelled
                _item(2, status="excluded", reason="too_small"),  # labelled, not included
            ],
        )
    with db.write() as session, pytest.raises(ConflictError, match="nothing in it could be"):
        repo.freeze(session, ref, NOW)
    with db.read() as session:
        assert repo.get_version(session, ref).status == "draft"
    with db.write() as session:  # one label, of either field, is enough
        items = repo.list_items(session, ref)
        unlabelled = next(item for item in items if item.status == "included")
        repo.update_items(session, ref, {unlabelled.id: {"color": "Blue"}})
    with db.write() as session:
        assert repo.freeze(session, ref, NOW).status == "frozen"


def test_update_items_changes_only_mutable_fields(db: Database) -> None:
    ref = _version(db)
    with db.read() as session:
        first = repo.list_items(session, ref)[0]
    with db.write() as session:
        repo.update_items(session, ref, {first.id: {"color": "Blue", "status": "flagged"}})
        with pytest.raises(InputError, match="cannot change"):
            repo.update_items(session, ref, {first.id: {"content_sha256": "0" * 64}})
    with db.write() as session, pytest.raises(NotFoundError):
        repo.update_items(session, ref, {10_000: {"color": "Blue"}})
    with db.read() as session:
        row = repo.list_items(session, ref)[0]
    assert (row.color, row.status) == ("Blue", "flagged")


def test_last_retrain_follows_the_production_models_dataset(db: Database) -> None:
    ref = _version(db)
    with db.read() as session:
        assert repo.last_retrain(session) is None
    with db.write() as session:
        session.add(
            ModelVersionRow(
                version="m1",
                path="m1",
                files_sha256="0" * 64,
                dataset_ref=ref,
                status="registered",
                card={},
                metrics={},
                created_at=NOW,
                created_by="a",
            )
        )
        session.flush()
        session.add(ModelAliasRow(alias="production", version="m1", updated_at=NOW, updated_by="a"))
    with db.read() as session:
        assert repo.last_retrain(session) == NOW


def test_fixed_images_since_gives_labels_urls_and_audit(db: Database) -> None:
    old = add_image(db, image_type="Stock", color="Red")
    new = add_image(db, image_type="Stock", color="Red")
    with db.write() as session:
        fix_service.apply_fix(
            session,
            image_key=old.image_key,
            advertiser_id="a1",
            author=Author("bob"),
            scope="global",
            image_type="Dealer",
            color=None,
            comment=None,
            clock=FakeClock(NOW),
        )
        fix_service.apply_fix(
            session,
            image_key=new.image_key,
            advertiser_id="a1",
            author=Author("alice"),
            scope="global",
            image_type="Dealer",
            color=None,
            comment=None,
            clock=FakeClock(NOW + dt.timedelta(hours=2)),
        )
        audit = fix_service.apply_fix(
            session,
            image_key=new.image_key,
            advertiser_id="a2",
            author=Author("carol"),
            scope="advertiser",
            image_type=None,
            color="Burgundy",
            comment=None,
            clock=FakeClock(NOW + dt.timedelta(hours=3)),
        )
    with db.read() as session:
        found = repo.fixed_images_since(session, NOW + dt.timedelta(hours=1))
        everything = repo.fixed_images_since(session, None)
    assert len(everything) == 3
    assert [(f.scope, f.advertiser_id, f.image_type, f.color, f.user) for f in found] == [
        ("global", "a1", "Dealer", None, "alice"),
        # The override names only a color; its type comes from the global fix.
        ("advertiser", "a2", "Dealer", "Burgundy", "carol"),
    ]
    assert found[1].fix_audit_id == audit.id
    assert found[1].urls == [new.url]
    assert found[1].content_sha256 == new.content_sha256
