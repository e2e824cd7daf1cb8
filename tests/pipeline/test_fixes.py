"""Fixes found through the pHash: a re-upload keeps its fix, a recoloured copy its color."""

from __future__ import annotations

from cartag.clock import FakeClock
from cartag.pipeline.fixes import Author, apply_fix, decide, find_fixes
from cartag.store.db import Database
from tests.support.factories import NOW, add_image

SHOT = "8f3a5c7e9b1d2f46"
ONE_BIT_OFF = "8f3a5c7e9b1d2f47"


def _fix(db: Database, image_key: str, scope: str, image_type: str, color: str) -> None:
    with db.write() as session:
        apply_fix(
            session,
            image_key=image_key,
            advertiser_id="dealer-1",
            author=Author("staff"),
            scope=scope,
            image_type=image_type,
            color=color,
            comment=None,
            clock=FakeClock(NOW),
        )


def _answer(
    db: Database, image_key: str, phash: str, model: tuple[str, str]
) -> tuple[str | None, ...]:
    with db.read() as session:
        labels = find_fixes(session, "dealer-1", [(image_key, phash)], max_distance=3)
    decided = decide((model[0], "model"), (model[1], "model"), labels.get(image_key))
    return (decided.image_type, decided.type_source, decided.color, decided.color_source)


def test_a_reupload_the_model_answered_alike_takes_the_whole_fix(db: Database) -> None:
    # The model called the photo an Orange Dealer shot; staff fixed it to a Red Stock one.
    fixed = add_image(db, phash=SHOT, image_type="Dealer", color="Orange")
    _fix(db, fixed.image_key, "global", "Stock", "Red")
    copy = add_image(db, phash=ONE_BIT_OFF, image_type="Dealer", color="Orange")

    answer = _answer(db, copy.image_key, ONE_BIT_OFF, ("Dealer", "Orange"))

    assert answer == ("Stock", "fix", "Red", "fix")


def test_a_recoloured_copy_of_the_shot_keeps_its_own_color(db: Database) -> None:
    # A maker's render of one car in red and in blue: the same grey picture, so the
    # same pHash; the model tells the colors apart, and a Red fix must not make the
    # blue render Red.
    red = add_image(db, phash=SHOT, image_type="Dealer", color="Orange")
    _fix(db, red.image_key, "global", "Stock", "Red")
    _fix(db, red.image_key, "advertiser", "Stock", "Red")
    blue = add_image(db, phash=SHOT, image_type="Dealer", color="Blue")

    answer = _answer(db, blue.image_key, SHOT, ("Dealer", "Blue"))

    assert answer == ("Stock", "override", "Blue", "model")


def test_a_fix_on_the_image_itself_always_carries_its_color(db: Database) -> None:
    image = add_image(db, phash=SHOT, image_type="Dealer", color="Blue")
    _fix(db, image.image_key, "global", "Stock", "Red")

    answer = _answer(db, image.image_key, SHOT, ("Dealer", "Blue"))

    assert answer == ("Stock", "fix", "Red", "fix")
