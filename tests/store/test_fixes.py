from __future__ import annotations

import datetime as dt
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from sqlalchemy import event

from cartag.clock import FakeClock, SystemClock
from cartag.errors import InputError, NotFoundError
from cartag.pipeline import fixes as fix_service
from cartag.pipeline.fixes import Author
from cartag.store import fixes as fix_repo
from cartag.store.db import Database
from tests.support.db import fresh_database
from tests.support.factories import NOW, add_image


def _fix(db: Database, key: str, *, minute: int = 0, **kwargs: object) -> None:
    values: dict[str, object] = {
        "advertiser_id": "adv-1",
        "author": Author("alice"),
        "scope": "global",
        "image_type": None,
        "color": None,
        "comment": None,
    }
    values.update(kwargs)
    with db.write() as session:
        fix_service.apply_fix(
            session,
            image_key=key,
            clock=FakeClock(NOW + dt.timedelta(minutes=minute)),
            **values,  # type: ignore[arg-type]
        )


def test_resolution_order_override_then_global_then_model(db: Database) -> None:
    image = add_image(db, image_type="Stock", color="Red")
    _fix(db, image.image_key, image_type="Dealer", color="Blue", scope="global")
    _fix(db, image.image_key, color="Green", scope="advertiser", advertiser_id="adv-2", minute=1)

    adv1 = fix_service.current_answer(db, "adv-1", image.image_key)
    assert (adv1.image_type, adv1.color, adv1.source) == ("Dealer", "Blue", "fix")
    adv2 = fix_service.current_answer(db, "adv-2", image.image_key)
    assert (adv2.image_type, adv2.type_source) == ("Dealer", "fix")
    assert (adv2.color, adv2.color_source, adv2.source) == ("Green", "override", "override")
    other = fix_service.current_answer(db, "adv-3", image.image_key)
    assert other.color == "Blue"


def test_audit_records_from_to_who_scope(db: Database) -> None:
    image = add_image(db, image_type="Dealer", color="Red")
    _fix(db, image.image_key, color="Burgundy", comment="dark red", author=Author("bob"))
    _fix(db, image.image_key, color="Red", minute=1, scope="advertiser", advertiser_id="adv-9")
    with db.read() as session:
        entries = fix_repo.history(session, image.image_key)
    assert [e.changes for e in entries] == [
        {"color": {"from": "Red", "to": "Burgundy"}},
        {"color": {"from": "Burgundy", "to": "Red"}},
    ]
    assert entries[0].user == "bob" and entries[0].comment == "dark red"
    assert entries[1].scope == "advertiser" and entries[1].advertiser_id == "adv-9"


def test_placeholder_fix_clears_color(db: Database) -> None:
    image = add_image(db, image_type="Dealer", color="Red")
    _fix(db, image.image_key, image_type="Placeholder")
    answer = fix_service.current_answer(db, "adv-1", image.image_key)
    assert answer.image_type == "Placeholder" and answer.color is None
    with db.read() as session:
        (entry,) = fix_repo.history(session, image.image_key)
    assert entry.changes["color"] == {"from": "Red", "to": None}


def test_fix_found_through_phash_for_a_new_key(db: Database) -> None:
    original = add_image(db, image_type="Stock", phash="ffff0000ffff0000")
    _fix(db, original.image_key, image_type="Dealer")
    reupload = add_image(db, image_type="Stock", phash="ffff0000ffff0000")
    with db.read() as session:
        found = fix_service.find_fixes(session, "adv-1", [(reupload.image_key, reupload.phash)])
    assert found[reupload.image_key].global_fix is not None
    assert fix_service.current_answer(db, "adv-1", reupload.image_key).image_type == "Dealer"


def test_bad_fixes_are_refused(db: Database) -> None:
    image = add_image(db)
    with pytest.raises(NotFoundError):
        _fix(db, "v1:nope", color="Red")
    with pytest.raises(InputError) as exc:
        _fix(db, image.image_key)
    assert exc.value.field == "image_type"
    with db.read() as session, pytest.raises(NotFoundError):
        fix_repo.history(session, "v1:nope")


def test_conflicts_list_images_whose_advertisers_disagree(db: Database) -> None:
    agreed = add_image(db)
    disputed = add_image(db)
    _fix(db, agreed.image_key, color="Blue", scope="advertiser", advertiser_id="a")
    _fix(db, agreed.image_key, color="Blue", scope="advertiser", advertiser_id="b")
    _fix(db, disputed.image_key, color="Blue", scope="advertiser", advertiser_id="a")
    _fix(db, disputed.image_key, color="Grey", scope="advertiser", advertiser_id="b")
    with db.read() as session:
        total, page = fix_repo.conflicts(session)
    assert total == 1
    assert page[0].image.image_key == disputed.image_key
    assert page[0].fields == ["color"]
    assert {f.scope_key for f in page[0].fixes} == {"a", "b"}


def test_fifty_concurrent_fixes_lose_none(db: Database) -> None:
    image = add_image(db, color="Red")
    colors = ["Blue", "Green", "Grey", "White", "Black"]

    def fix(i: int) -> None:
        _fix(
            db, image.image_key, color=colors[i % len(colors)], author=Author(f"user-{i}"), minute=i
        )

    with ThreadPoolExecutor(max_workers=10) as pool:
        list(pool.map(fix, range(50)))
    with db.read() as session:
        entries = fix_repo.history(session, image.image_key)
    assert len(entries) == 50
    assert {e.user for e in entries} == {f"user-{i}" for i in range(50)}
    # Serialised: each entry starts where the one committed before it ended.
    by_commit = sorted(entries, key=lambda e: e.id)
    assert by_commit[0].changes["color"]["from"] == "Red"
    for before, after in zip(by_commit, by_commit[1:], strict=False):
        assert after.changes["color"]["from"] == before.changes["color"]["to"]


@pytest.fixture
def pg_db(tmp_path: Path) -> Iterator[Database]:
    with fresh_database("postgresql", tmp_path) as database:
        yield database


@pytest.mark.services
def test_history_is_in_commit_order_under_fifty_concurrent_writers(pg_db: Database) -> None:
    # Issue 13 item 10: each writer has its own session and reads the real clock; the
    # history must list the fixes in the order they took effect, so its last entry is
    # the fix in effect (the time used to be read before the image row was locked).
    image = add_image(pg_db, color="Red")
    colors = ["Blue", "Green", "Grey", "White", "Black", "Yellow", "Orange"]
    start = threading.Barrier(50)
    clock = SystemClock()

    def fix(i: int) -> None:
        start.wait()
        with pg_db.write() as session:
            fix_service.apply_fix(
                session,
                image_key=image.image_key,
                advertiser_id="adv-1",
                author=Author(f"user-{i}"),
                scope="global",
                image_type=None,
                color=colors[i % len(colors)],
                comment=None,
                clock=clock,
            )

    with ThreadPoolExecutor(max_workers=50) as pool:
        list(pool.map(fix, range(50)))
    with pg_db.read() as session:
        entries = fix_repo.history(session, image.image_key)
    assert len(entries) == 50
    assert entries[0].changes["color"]["from"] == "Red"
    inversions = [
        (before.user, after.user)
        for before, after in zip(entries, entries[1:], strict=False)
        if after.changes["color"]["from"] != before.changes["color"]["to"]
        or after.created_at < before.created_at
    ]
    assert inversions == []
    in_effect = fix_service.current_answer(pg_db, "adv-1", image.image_key)
    assert in_effect.color == entries[-1].changes["color"]["to"]


def test_near_duplicate_phash_inherits_the_fix(db: Database) -> None:
    original = add_image(db, image_type="Stock", phash="ffff0000ffff0000")
    _fix(db, original.image_key, image_type="Dealer")
    close = add_image(db, image_type="Stock", phash="fffe0000ffff0001")  # 2 bits away
    far = add_image(db, image_type="Stock", phash="ff000000ffff00ff")  # 16 bits away
    pairs = [(close.image_key, close.phash), (far.image_key, far.phash)]
    with db.read() as session:
        exact_only = fix_service.find_fixes(session, "adv-1", pairs)
        near = fix_service.find_fixes(session, "adv-1", pairs, max_distance=3)
    assert exact_only == {}
    assert set(near) == {close.image_key}
    assert near[close.image_key].global_fix is not None


def test_phash_bands_split_the_hash() -> None:
    assert fix_repo.phash_bands("0001000200030004") == [1, 2, 3, 4]
    assert fix_repo.phash_bands(None) == [None] * 4


@pytest.mark.parametrize("max_distance", [0, 3])
def test_few_fixes_are_read_whole_and_chosen_as_the_queries_would(
    db: Database, monkeypatch: pytest.MonkeyPatch, max_distance: int
) -> None:
    hashes = ["ffff0000ffff0000", "fffe0000ffff0001", "ff000000ffff00ff", "0123456789abcdef"]
    fixed = [add_image(db, image_type="Stock", phash=ph) for ph in hashes]
    for minute, image in enumerate(fixed):
        _fix(db, image.image_key, minute=minute, image_type="Dealer")
        scope = {"scope": "advertiser", "advertiser_id": "adv-2"}
        _fix(db, image.image_key, minute=10 + minute, color="Red", **scope)
    asked = [(image.image_key, image.phash) for image in fixed[1:3]]
    asked += [("v1:unknown", "fffe0000ffff0003"), ("v1:none", None), ("v1:far", "1111222233334444")]
    scopes = ["", "adv-2"]

    def candidates() -> list[int]:
        with db.read() as session:
            rows = fix_repo.candidate_fixes(session, scopes, asked, max_distance=max_distance)
            return [row.id for row in rows]

    read_whole = candidates()
    monkeypatch.setattr(fix_repo, "FEW_FIXES", 0)  # as if the scopes held many
    assert read_whole == candidates()
    assert 2 <= len(read_whole) < 8  # some chosen, not all
    with db.read() as session:
        assert fix_repo.candidate_fixes(session, ["adv-3"], asked) == []  # a scope with none


def test_scopes_holding_fewer_fixes_than_the_images_asked_are_read_in_one_query(
    db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A listing asks about every image of an advertiser (50,000): IN lists of 250 images'
    keys and bands were 200 queries, most of a page's time, for a few thousand fixes."""
    fixed = [add_image(db, phash=f"{n:04x}" * 4) for n in range(1, 7)]
    for image in fixed:
        _fix(db, image.image_key, image_type="Dealer")
    asked = [(image.image_key, image.phash) for image in fixed[:2]]
    asked += [(f"v1:other-{n}", f"{0x1000 + n:04x}" * 4) for n in range(600)]
    monkeypatch.setattr(fix_repo, "FEW_FIXES", 2)  # the scopes hold more than "few"
    statements: list[str] = []

    def record(conn: object, cursor: object, statement: str, *args: object) -> None:
        statements.append(statement)

    event.listen(db.engine, "before_cursor_execute", record)
    try:
        with db.read() as session:
            rows = fix_repo.candidate_fixes(session, [""], asked, max_distance=3)
    finally:
        event.remove(db.engine, "before_cursor_execute", record)
    assert {row.image_key for row in rows} == {image.image_key for image in fixed[:2]}
    reads = [s for s in statements if "FROM fixes" in s and "count(" not in s]
    assert len(reads) == 1, statements


def test_phash_values_read_the_bands_as_phash_bands_does() -> None:
    phashes = ["8f3a5c7e9b1d2f46", "FFFFFFFFFFFFFFFF", "0000000000000001", None, "", "abc"]
    values, valid = fix_repo.phash_values(phashes)
    assert valid.tolist() == [True, True, True, False, False, False]
    assert values.tolist()[:3] == [0x8F3A5C7E9B1D2F46, 2**64 - 1, 1]
    for n, phash in enumerate(phashes):
        bands = [int(fix_repo.band_of(values[n : n + 1], i)[0]) for i in range(4)]
        assert (bands if valid[n] else [None] * 4) == fix_repo.phash_bands(phash)
    with pytest.raises(ValueError):
        fix_repo.phash_values(["not-a-hex-phash!"])
