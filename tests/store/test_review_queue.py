"""The review queues: per label, undecided items, progress, resuming (SQLite and PostgreSQL)."""

from __future__ import annotations

import pytest

from cartag.errors import InputError, NotFoundError
from cartag.store import review, review_queue
from cartag.store.blobs import MemoryBlobStore
from cartag.store.db import Database
from cartag.store.review_conflicts import Claim, conflict_claims, conflict_fields
from cartag.store.review_queue import ItemFilter
from tests.web.seed import add_item, at, seed_queues

TYPE_QUEUE = ["stock", "typeclash", "placeholder", "calm", "unranked"]
COLOR_QUEUE = ["grey", "flagged", "white", "unranked"]


@pytest.fixture
def seeded(db: Database) -> tuple[str, dict[str, int]]:
    return seed_queues(db, MemoryBlobStore())


def _names(
    db: Database, seeded: tuple[str, dict[str, int]], filters: ItemFilter, **kw: int
) -> list[str]:
    ref, ids = seeded
    names = {v: k for k, v in ids.items()}
    with db.read() as session:
        page = review_queue.list_items(session, ref, filters, **kw)
    return [names[item.id] for item in page.items]


def _decide(db: Database, ref: str, item_id: int, minute: int, **kw: str) -> None:
    with db.write() as session:
        review.record_decision(
            session, ref, item_id, user=kw.pop("user", "rita"), now=at(minute), **kw
        )


def test_each_queue_holds_its_own_suspicions_and_conflicts(
    db: Database, seeded: tuple[str, dict[str, int]]
) -> None:
    assert _names(db, seeded, ItemFilter(queue="image_type")) == TYPE_QUEUE
    assert _names(db, seeded, ItemFilter(queue="color")) == COLOR_QUEUE
    # A decided conflict stays in its queue (it is no longer flagged).
    _decide(db, seeded[0], seeded[1]["flagged"], 1, action="relabel", field="color", label="Grey")
    assert _names(db, seeded, ItemFilter(queue="color")) == COLOR_QUEUE
    assert _names(db, seeded, ItemFilter(queue="image_type")) == TYPE_QUEUE
    # No queue: every item a reviewer can act on, as before.
    assert len(_names(db, seeded, ItemFilter())) == 8
    with db.read() as session, pytest.raises(InputError) as caught:
        review_queue.list_items(session, seeded[0], ItemFilter(queue="shape"))
    assert caught.value.field == "queue"


def test_a_decision_settles_an_item_in_its_own_queue_only(
    db: Database, seeded: tuple[str, dict[str, int]]
) -> None:
    ref, ids = seeded
    _decide(db, ref, ids["stock"], 1, action="accept", field="image_type")
    _decide(db, ref, ids["unranked"], 2, action="relabel", field="color", label="Grey")
    _decide(db, ref, ids["white"], 3, action="exclude", field="color")
    undecided_types = ItemFilter(queue="image_type", decided=False)
    assert _names(db, seeded, undecided_types) == ["typeclash", "placeholder", "calm", "unranked"]
    assert _names(db, seeded, ItemFilter(queue="color", decided=False)) == ["grey", "flagged"]
    assert _names(db, seeded, ItemFilter(queue="color", decided=True)) == ["white", "unranked"]
    with db.read() as session:
        types = review_queue.progress(session, ref, "image_type")
        colors = review_queue.progress(session, ref, "color")
        whole = review_queue.progress(session, ref, None)
        page = review_queue.list_items(session, ref, ItemFilter(queue="color"))
    assert (types.done, types.total, types.undecided) == (1, 5, 4)
    assert (colors.done, colors.total) == (2, 4)
    assert (whole.done, whole.total) == (3, 8)
    assert page.decided == {ids["white"], ids["unranked"]}

    # An exclusion settles the item in both queues; its undo brings it back.
    _decide(db, ref, ids["unranked"], 4, action="exclude", field="color")
    assert "unranked" not in _names(db, seeded, undecided_types)
    with db.write() as session:
        review.undo_last(session, ref, ids["unranked"], user="rita", now=at(5))
    assert _names(db, seeded, undecided_types)[-1] == "unranked"


def test_the_next_page_starts_after_an_item_and_skips_nothing(
    db: Database, seeded: tuple[str, dict[str, int]]
) -> None:
    ref, ids = seeded
    undecided = ItemFilter(queue="image_type", decided=False)
    assert _names(db, seeded, undecided, limit=3) == ["stock", "typeclash", "placeholder"]
    _decide(db, ref, ids["stock"], 1, action="accept", field="image_type")
    _decide(db, ref, ids["typeclash"], 2, action="relabel", field="image_type", label="Stock")
    # Page 2 by number would now skip "calm" and "unranked": after "placeholder" does not.
    assert _names(db, seeded, undecided, page=2, limit=3) == []
    with db.read() as session:
        offset = review_queue.offset_after(session, ref, undecided, ids["placeholder"])
        # A decided item (no longer listed) still marks a place in the ranking.
        before = review_queue.offset_after(session, ref, undecided, ids["typeclash"])
        unranked = review_queue.offset_after(session, ref, undecided, ids["unranked"])
        with pytest.raises(NotFoundError):
            review_queue.offset_after(session, ref, undecided, 10**9)
    assert (offset, before, unranked) == (1, 0, 3)
    assert _names(db, seeded, undecided, offset=offset, limit=3) == ["calm", "unranked"]
    with db.read() as session, pytest.raises(InputError) as caught:
        review_queue.list_items(session, ref, undecided, offset=-1)
    assert caught.value.field == "offset"


def test_where_a_reviewer_stopped(db: Database, seeded: tuple[str, dict[str, int]]) -> None:
    ref, ids = seeded
    with db.read() as session:
        assert review_queue.last_decided(session, ref, "rita", "image_type") is None
    _decide(db, ref, ids["placeholder"], 1, action="accept", field="image_type")
    _decide(db, ref, ids["grey"], 2, action="accept", field="color")
    _decide(db, ref, ids["calm"], 3, action="accept", field="image_type", user="sam")
    _decide(db, ref, ids["stock"], 4, action="accept", field="image_type")
    with db.write() as session:
        review.undo_last(session, ref, ids["stock"], user="rita", now=at(5))
    with db.read() as session:
        # The undone decision does not count; another reviewer's and the other queue's neither.
        assert review_queue.last_decided(session, ref, "rita", "image_type") == ids["placeholder"]
        assert review_queue.last_decided(session, ref, "rita", "color") == ids["grey"]
        assert review_queue.last_decided(session, ref, "sam", None) == ids["calm"]


def test_drafts_list_the_progress_of_each_queue(
    db: Database, seeded: tuple[str, dict[str, int]]
) -> None:
    ref, ids = seeded
    _decide(db, ref, ids["grey"], 1, action="accept", field="color")
    with db.read() as session:
        [draft] = review_queue.draft_versions(session)
    assert draft.version.ref == ref
    assert {q: (p.done, p.total) for q, p in draft.progress.items()} == {
        "image_type": (0, 5),
        "color": (1, 4),
    }


def test_a_placeholder_is_not_in_the_color_queue(
    db: Database, seeded: tuple[str, dict[str, int]]
) -> None:
    ref, ids = seeded
    # A generated placeholder card: unscored, labelled Placeholder, no color.
    ids["card"] = add_item(db, ref, image_type="Placeholder", color=None)
    assert _names(db, seeded, ItemFilter(queue="image_type")) == [*TYPE_QUEUE, "card"]
    assert _names(db, seeded, ItemFilter(queue="color")) == COLOR_QUEUE
    with db.read() as session:
        [draft] = review_queue.draft_versions(session)
    assert draft.progress["color"].total == len(COLOR_QUEUE)  # it can be finished
    # Relabelled a Dealer, it has a color to review.
    _decide(db, ref, ids["card"], 1, action="relabel", field="image_type", label="Dealer")
    assert _names(db, seeded, ItemFilter(queue="color")) == [*COLOR_QUEUE, "card"]


def test_who_said_what_in_a_conflict() -> None:
    claims = [
        {"labels": ["Dealer", "Black"], "advertiser_id": "dealer-42", "scope": "advertiser"},
        {"labels": ["Dealer", "Grey"], "scope": "global", "user": "ann", "source": "fix"},
        {"labels": ["Dealer", None], "source": "version"},
        {"labels": ["Stock"]},  # malformed: ignored
        "nonsense",
    ]
    provenance = {"conflict": claims}
    assert conflict_claims(provenance) == [
        Claim("dealer-42", "Dealer", "Black"),
        Claim("global fix (ann)", "Dealer", "Grey"),
        Claim("this version", "Dealer", None),
    ]
    assert conflict_fields(provenance) == ("color",)
    both = {"conflict": [{"labels": ["Dealer", "Red"]}, {"labels": ["Stock", "Blue"]}]}
    assert conflict_fields(both) == ("image_type", "color")
    # Not recorded: the item is in both queues, with nobody to name.
    assert conflict_fields({}) == ("image_type", "color")
    assert conflict_claims({"conflict": "?"}) == []
