"""An advertiser's images as answered now: the precedence rule, filters, order, pages."""

from __future__ import annotations

import datetime as dt

from cartag.clock import FakeClock
from cartag.pipeline import fixes as fix_service
from cartag.pipeline.fixes import Author
from cartag.pipeline.inventory import ImageFilter, list_images
from cartag.store import advertisers as advertiser_repo
from cartag.store.db import Database
from tests.support.factories import NOW, add_image


def _fix(db: Database, key: str, advertiser: str, scope: str, user: str, **labels: str) -> None:
    with db.write() as session:
        fix_service.apply_fix(
            session,
            image_key=key,
            advertiser_id=advertiser,
            scope=scope,
            author=Author(user),
            image_type=labels.get("image_type"),
            color=labels.get("color"),
            comment=None,
            clock=FakeClock(NOW),
        )


def _seed(db: Database) -> dict[str, str]:
    """dealer-42's images, by name: unsure ones, sure ones, fixed ones, a near duplicate."""
    images = {
        "unsure_low": add_image(db, confidence=0.41, image_type="Stock", color="White"),
        "unsure_mid": add_image(db, confidence=0.62),
        "sure": add_image(db, confidence=0.97, image_type="Placeholder", color=None),
        "overridden": add_image(db, confidence=0.30),
        "global": add_image(db, confidence=0.55, color="Blue"),
        # Another URL of a photo fixed globally elsewhere: same pHash, so the fix applies.
        "copy": add_image(db, confidence=0.70, phash="00000000000000ff"),
        "elsewhere": add_image(db, confidence=0.50, phash="00000000000000ff"),
    }
    keys = {name: image.image_key for name, image in images.items()}
    mine = [key for name, key in keys.items() if name != "elsewhere"]
    with db.write() as session:
        advertiser_repo.record_advertiser_images(session, "dealer-42", dict.fromkeys(mine), NOW)
        advertiser_repo.record_advertiser_images(
            session, "dealer-42", dict.fromkeys([keys["sure"]]), NOW + dt.timedelta(hours=1)
        )
    _fix(db, keys["overridden"], "dealer-42", "advertiser", "rita", image_type="Dealer")
    _fix(db, keys["global"], "dealer-7", "global", "staff", color="Grey")
    _fix(db, keys["elsewhere"], "dealer-7", "global", "staff", image_type="Stock")
    return keys


def _names(keys: dict[str, str], listing_keys: list[str]) -> list[str]:
    by_key = {key: name for name, key in keys.items()}
    return [by_key[key] for key in listing_keys]


def test_unsure_first_then_unfixed_then_fixed(db: Database) -> None:
    keys = _seed(db)
    listing = list_images(db, "dealer-42", ImageFilter())
    assert _names(keys, [i.image.image_key for i in listing.items]) == [
        "unsure_low",  # the model was unsure (0.41 < 0.8): least confident first
        "unsure_mid",
        "global",  # a color fix leaves the model's unsure type: still worth a look
        "sure",
        "overridden",  # a person decided the type
        "copy",  # a global type fix of a near-identical photo applies
    ]
    assert (listing.images, listing.low_confidence, listing.fixed) == (6, 3, 3)
    names = _names(keys, [i.image.image_key for i in listing.items])
    by_name = dict(zip(names, listing.items, strict=True))
    overridden = by_name["overridden"]
    assert (overridden.fix_scope, overridden.fixed_by, overridden.fixed_at) == (
        "override",
        "rita",
        NOW,
    )
    assert (overridden.answer.image_type, overridden.answer.type_source) == ("Dealer", "override")
    assert (by_name["global"].answer.color, by_name["global"].answer.color_source) == (
        "Grey",
        "fix",
    )
    assert by_name["copy"].answer.image_type == "Stock" and by_name["copy"].fixed_by == "staff"
    assert by_name["sure"].answer.color is None and not by_name["sure"].fixed


def test_filters_apply_to_the_answer(db: Database) -> None:
    keys = _seed(db)

    def names(**filters: object) -> set[str]:
        listing = list_images(db, "dealer-42", ImageFilter(**filters))  # type: ignore[arg-type]
        return set(_names(keys, [i.image.image_key for i in listing.items]))

    assert names(low_confidence=True) == {"unsure_low", "unsure_mid", "global"}
    assert names(fixed=False) == {"unsure_low", "unsure_mid", "sure"}
    assert names(fixed=True) == {"overridden", "global", "copy"}
    assert names(fixed_by="rita") == {"overridden"}
    assert names(fixed_by="nobody") == set()
    assert names(image_type="Stock") == {"unsure_low", "copy"}
    assert names(color="Grey") == {"global"}
    assert names(color="none") == {"sure"}
    assert names(image_type="Dealer", low_confidence=False) == {"overridden"}
    # Another advertiser sees its own answers: no override, and none of 42's images.
    other = list_images(db, "dealer-7", ImageFilter())
    assert {i.image.image_key for i in other.items} == {keys["global"], keys["elsewhere"]}


def test_pages_and_the_recent_order(db: Database) -> None:
    keys = _seed(db)
    first = list_images(db, "dealer-42", ImageFilter(), page=1, limit=4)
    last = list_images(db, "dealer-42", ImageFilter(), page=999, limit=4)
    assert (first.total, first.pages, len(first.items)) == (6, 2, 4)
    assert (last.page, len(last.items)) == (2, 2)  # a page past the end is the last one
    recent = list_images(db, "dealer-42", ImageFilter(order="recent"), limit=1)
    assert _names(keys, [i.image.image_key for i in recent.items]) == ["sure"]
    empty = list_images(db, "nobody", ImageFilter())
    assert (empty.total, empty.page, empty.pages, empty.items) == (0, 1, 1, [])
