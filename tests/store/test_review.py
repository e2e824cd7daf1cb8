"""The review queue and decisions on a draft dataset version (SQLite and PostgreSQL)."""

from __future__ import annotations

import pytest
from sqlalchemy import update

from cartag.errors import ConflictError, InputError, NotFoundError
from cartag.store import review, review_queue
from cartag.store.blobs import MemoryBlobStore
from cartag.store.db import Database
from cartag.store.review_queue import ItemFilter
from cartag.store.tables import DatasetItemRow, DatasetVersionRow
from tests.web.seed import add_item, add_version, at, seed_review


@pytest.fixture
def seeded(db: Database) -> tuple[str, dict[str, int]]:
    return seed_review(db, MemoryBlobStore())


def _ids(db: Database, ref: str, filters: ItemFilter | None = None, **kw: int) -> list[int]:
    with db.read() as session:
        return [item.id for item in review_queue.list_items(session, ref, filters, **kw).items]


def _item(db: Database, item_id: int) -> DatasetItemRow:
    with db.read() as session:
        item = session.get(DatasetItemRow, item_id)
        assert item is not None
        return item


def test_queue_is_sorted_by_suspicion_with_unranked_last(
    db: Database, seeded: tuple[str, dict[str, int]]
) -> None:
    ref, ids = seeded
    expected = ["stock", "flagged", "placeholder", "calm", "unranked"]
    assert _ids(db, ref) == [ids[name] for name in expected]
    with db.read() as session:
        page = review_queue.list_items(session, ref, page=2, limit=2)
    assert page.total == 5
    assert [i.id for i in page.items] == [ids["placeholder"], ids["calm"]]


def test_filters(db: Database, seeded: tuple[str, dict[str, int]]) -> None:
    ref, ids = seeded
    assert _ids(db, ref, ItemFilter(flagged_only=True)) == [ids["flagged"]]
    assert _ids(db, ref, ItemFilter(status="excluded")) == [ids["unreadable"]]
    assert _ids(db, ref, ItemFilter(image_type="stock")) == [ids["unranked"]]
    assert _ids(db, ref, ItemFilter(color="blue")) == [ids["placeholder"]]
    assert _ids(db, ref, ItemFilter(image_type="Dealer", color="Red")) == [
        ids["stock"],
        ids["flagged"],
        ids["calm"],
    ]


@pytest.mark.parametrize(
    ("filters", "kwargs", "field"),
    [
        (ItemFilter(status="maybe"), {}, "status"),
        (ItemFilter(image_type="Truck"), {}, "image_type"),
        (ItemFilter(color="Teal"), {}, "color"),
        (None, {"page": 0}, "page"),
        (None, {"limit": 0}, "limit"),
        (None, {"limit": review.MAX_LIMIT + 1}, "limit"),
    ],
)
def test_bad_listing_arguments_name_the_field(
    db: Database,
    seeded: tuple[str, dict[str, int]],
    filters: ItemFilter | None,
    kwargs: dict[str, int],
    field: str,
) -> None:
    ref, _ = seeded
    with db.read() as session, pytest.raises(InputError) as caught:
        review_queue.list_items(session, ref, filters, **kwargs)
    assert caught.value.field == field


def test_accept_relabel_exclude_are_stored_and_applied(
    db: Database, seeded: tuple[str, dict[str, int]]
) -> None:
    ref, ids = seeded
    with db.write() as session:
        review.record_decision(
            session, ref, ids["flagged"], action="accept", user="rita", now=at(1)
        )
        review.record_decision(
            session,
            ref,
            ids["stock"],
            action="relabel",
            label="stock",
            user="rita",
            now=at(2),
        )
        review.record_decision(
            session,
            ref,
            ids["calm"],
            action="relabel",
            field="color",
            label="grey",
            user="sam",
            now=at(3),
        )
        review.record_decision(
            session, ref, ids["unranked"], action="exclude", user="sam", now=at(4)
        )

    flagged, stock, calm, unranked = (
        _item(db, ids[n]) for n in ("flagged", "stock", "calm", "unranked")
    )
    assert (flagged.status, flagged.reason, flagged.image_type) == ("included", None, "Dealer")
    assert (stock.status, stock.image_type, stock.color) == ("included", "Stock", "Red")
    assert calm.color == "Grey"
    assert (unranked.status, unranked.reason) == ("excluded", "review")

    with db.read() as session:
        stored = review.decisions(session, ref)
    assert [(d.item_id, d.action, d.field, d.from_label, d.to_label, d.user) for d in stored] == [
        (ids["flagged"], "accept", "image_type", "Dealer", "Dealer", "rita"),
        (ids["stock"], "relabel", "image_type", "Dealer", "Stock", "rita"),
        (ids["calm"], "relabel", "color", "Red", "Grey", "sam"),
        (ids["unranked"], "exclude", "image_type", "Stock", "Stock", "sam"),
    ]
    assert [d.created_at for d in stored] == [at(1), at(2), at(3), at(4)]
    assert stored[0].before == {
        "status": "flagged",
        "reason": "conflict",
        "image_type": "Dealer",
        "color": "Red",
    }
    # Excluded by a reviewer: still in the queue (it can be re-included), shown last-decided.
    with db.read() as session:
        page = review_queue.list_items(session, ref)
    assert ids["unranked"] in [i.id for i in page.items]
    assert page.last_decisions[ids["unranked"]].action == "exclude"
    with db.write() as session:
        review.record_decision(
            session, ref, ids["unranked"], action="accept", user="sam", now=at(5)
        )
    assert _item(db, ids["unranked"]).status == "included"


def test_undo_restores_the_item_step_by_step(
    db: Database, seeded: tuple[str, dict[str, int]]
) -> None:
    ref, ids = seeded
    item_id = ids["placeholder"]
    with db.write() as session:
        review.record_decision(
            session, ref, item_id, action="relabel", label="Placeholder", user="rita", now=at(1)
        )
    relabelled = _item(db, item_id)
    # A Placeholder never has a color.
    assert (relabelled.image_type, relabelled.color) == ("Placeholder", None)
    with db.write() as session, pytest.raises(InputError) as caught:
        review.record_decision(
            session, ref, item_id, action="relabel", field="color", label="Red", user="x", now=at(2)
        )
    assert caught.value.field == "label"
    with db.write() as session:
        review.record_decision(session, ref, item_id, action="exclude", user="rita", now=at(3))

    with db.write() as session:
        undone, item = review.undo_last(session, ref, item_id, user="sam", now=at(4))
        assert undone.action == "exclude"
        assert (item.status, item.image_type) == ("included", "Placeholder")
    with db.write() as session:
        undone, item = review.undo_last(session, ref, item_id, user="sam", now=at(5))
        assert undone.action == "relabel"
    restored = _item(db, item_id)
    assert (restored.status, restored.reason, restored.image_type, restored.color) == (
        "included",
        None,
        "Dealer",
        "Blue",
    )
    with db.write() as session, pytest.raises(ConflictError):
        review.undo_last(session, ref, item_id, user="sam", now=at(6))
    with db.read() as session:
        stored = review.decisions(session, ref, item_id=item_id)
        assert review.decisions(session, ref, include_undone=False) == []
    assert [(d.undone_by, d.undone_at) for d in stored] == [("sam", at(5)), ("sam", at(4))]


def test_undo_brings_a_flagged_item_back(db: Database, seeded: tuple[str, dict[str, int]]) -> None:
    ref, ids = seeded
    with db.write() as session:
        review.record_decision(session, ref, ids["flagged"], action="exclude", user="r", now=at(1))
    with db.write() as session:
        review.undo_last(session, ref, ids["flagged"], user="r", now=at(2))
    item = _item(db, ids["flagged"])
    assert (item.status, item.reason) == ("flagged", "conflict")


@pytest.mark.parametrize(
    ("action", "field", "label", "bad"),
    [
        ("approve", "image_type", None, "action"),
        ("accept", "make", None, "field"),
        ("relabel", "image_type", None, "label"),
        ("relabel", "image_type", "Truck", "label"),
        ("relabel", "color", "Teal", "label"),
        ("relabel", "color", "n/a", "label"),
        ("accept", "image_type", "Stock", "label"),
    ],
)
def test_bad_decisions_name_the_field_and_change_nothing(
    db: Database,
    seeded: tuple[str, dict[str, int]],
    action: str,
    field: str,
    label: str | None,
    bad: str,
) -> None:
    ref, ids = seeded
    with db.write() as session, pytest.raises(InputError) as caught:
        review.record_decision(
            session, ref, ids["stock"], action=action, field=field, label=label, user="r", now=at(1)
        )
    assert caught.value.field == bad
    with db.read() as session:
        assert review.decisions(session, ref) == []
    assert _item(db, ids["stock"]).image_type == "Dealer"


def test_accept_needs_a_label(db: Database, seeded: tuple[str, dict[str, int]]) -> None:
    ref, _ = seeded
    unlabelled = add_item(db, ref, image_type=None, color=None, status="flagged", reason="conflict")
    with db.write() as session, pytest.raises(InputError) as caught:
        review.record_decision(session, ref, unlabelled, action="accept", user="r", now=at(1))
    assert caught.value.field == "action"
    with db.write() as session:
        review.record_decision(
            session, ref, unlabelled, action="relabel", label="Dealer", user="r", now=at(1)
        )
    assert _item(db, unlabelled).status == "included"


def test_items_excluded_by_a_filter_cannot_be_reviewed(
    db: Database, seeded: tuple[str, dict[str, int]]
) -> None:
    ref, ids = seeded
    for action in ("accept", "exclude"):
        with db.write() as session, pytest.raises(ConflictError, match="unreadable"):
            review.record_decision(
                session, ref, ids["unreadable"], action=action, user="r", now=at(1)
            )
    assert _item(db, ids["unreadable"]).reason == "unreadable"


def test_frozen_versions_and_foreign_items_are_refused(
    db: Database, seeded: tuple[str, dict[str, int]]
) -> None:
    ref, ids = seeded
    other = add_version(db, "trucks", 1)
    foreign = add_item(db, other)
    with db.write() as session, pytest.raises(NotFoundError, match="no item"):
        review.record_decision(session, ref, foreign, action="accept", user="r", now=at(1))
    with db.write() as session, pytest.raises(NotFoundError, match="no item"):
        review.record_decision(session, ref, 999_999, action="accept", user="r", now=at(1))
    with db.write() as session, pytest.raises(NotFoundError, match="does not exist"):
        review.record_decision(
            session, "nope@1", ids["stock"], action="accept", user="r", now=at(1)
        )

    with db.write() as session:
        review.record_decision(session, ref, ids["stock"], action="exclude", user="r", now=at(1))
        session.execute(
            update(DatasetVersionRow).where(DatasetVersionRow.ref == ref).values(status="frozen")
        )
    with db.write() as session, pytest.raises(ConflictError, match="frozen"):
        review.record_decision(session, ref, ids["calm"], action="accept", user="r", now=at(2))
    with db.write() as session, pytest.raises(ConflictError, match="frozen"):
        review.undo_last(session, ref, ids["stock"], user="r", now=at(2))
    assert _item(db, ids["stock"]).status == "excluded"
    # A frozen version can still be looked at; a reviewer's exclusion stays listed.
    assert _ids(db, ref)[:2] == [ids["stock"], ids["flagged"]]


def test_draft_versions_with_counts(db: Database, seeded: tuple[str, dict[str, int]]) -> None:
    ref, ids = seeded
    with db.write() as session:
        review.record_decision(session, ref, ids["stock"], action="accept", user="r", now=at(1))
        review.record_decision(session, ref, ids["calm"], action="accept", user="r", now=at(2))
        review.undo_last(session, ref, ids["calm"], user="r", now=at(3))
    with db.read() as session:
        drafts = review_queue.draft_versions(session)
    assert [(d.version.ref, d.items, d.flagged, d.decisions) for d in drafts] == [(ref, 6, 1, 1)]
