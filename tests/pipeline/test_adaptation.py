"""Advertiser-aware answers through the serving path: classify, the listing, the switch."""

from __future__ import annotations

import asyncio
import io
from collections.abc import Iterator, Sequence

import numpy as np
import pytest
from PIL import Image
from sqlalchemy import func, select

from cartag.clock import FakeClock
from cartag.models.classifier import Classifier, Prediction, make_prediction
from cartag.net.fetch import Fetcher
from cartag.pipeline.adaptation import Adapted
from cartag.pipeline.classify import ClassifyService
from cartag.pipeline.fixes import Author, current_answer, fix_image, resolve
from cartag.pipeline.inventory import ImageFilter, list_images
from cartag.pipeline.results import ClassifyResult
from cartag.settings import Settings
from cartag.store import advertisers as advertiser_repo
from cartag.store.db import Database
from cartag.store.tables import ClassifyDailyRow
from cartag.telemetry import Telemetry
from tests.support.factories import NOW, new_image

# Reddish and bluish photos: each is its own noise (so no two share a pHash), tinted.
RED, BLUE = (200, 40, 30), (30, 40, 200)


def photo(tint: tuple[int, int, int], seed: int) -> bytes:
    """A 64 x 48 JPEG of noise around ``tint``."""
    rng = np.random.default_rng(seed)
    pixels = np.clip(np.asarray(tint) + rng.normal(0, 40, (48, 64, 3)), 0, 255).astype(np.uint8)
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, "JPEG", quality=90)
    return out.getvalue()


class TintClassifier(Classifier):
    """Every image is a Dealer (0.9) and Red; its embedding is its mean color (3-d).

    Two photos of one tint are near-identical to it, photos of two tints far apart.
    """

    version = "tint-test"
    backbone_id = "tint-test-backbone"

    def predict(self, images: Sequence[Image.Image]) -> list[Prediction]:
        colors = [0.0] * 9 + [1.0, 0.0, 0.0]
        return [
            make_prediction(
                [0.9, 0.08, 0.02],
                colors,
                np.asarray(image.convert("RGB"), dtype=np.float32).reshape(-1, 3).mean(axis=0),
            )
            for image in images
        ]


class Scene:
    def __init__(self, settings: Settings, db: Database) -> None:
        self.db = db
        self.clock = FakeClock(NOW)
        self.settings = settings
        self.service = ClassifyService(
            settings, db, Fetcher(settings), TintClassifier(), self.clock
        )
        self.files = {
            "red1": photo(RED, 1),
            "red2": photo(RED, 2),
            "red3": photo(RED, 3),
            "blue1": photo(BLUE, 4),
            "blue2": photo(BLUE, 5),
        }

    def classify(self, advertiser: str, *names: str) -> dict[str, ClassifyResult]:
        names = names or tuple(self.files)
        contents = [(f"file:///{name}.jpg", self.files[name]) for name in names]
        results = asyncio.run(self.service.classify_contents(advertiser, contents))
        return dict(zip(names, results, strict=True))

    def fix(self, advertiser: str, key: str | None, **labels: str) -> None:
        assert key is not None
        self.clock.advance(1)
        fix_image(
            self.db,
            self.clock,
            Telemetry(),
            image_key=key,
            advertiser_id=advertiser,
            author=Author("dana"),
            scope=labels.pop("scope", "advertiser"),
            image_type=labels.get("image_type"),
            color=labels.get("color"),
            comment=None,
        )

    def switch(self, advertiser: str, on: bool | None) -> None:
        with self.db.write() as session:
            advertiser_repo.set_advertiser(
                session, advertiser, adapt_answers=on, now=self.clock.now()
            )


@pytest.fixture
def scene(settings: Settings, sqlite_db: Database) -> Iterator[Scene]:
    made = Scene(settings.model_copy(update={"advertiser_adaptation": True}), sqlite_db)
    try:
        yield made
    finally:
        made.service.close()


def sources(result: ClassifyResult) -> tuple[str | None, str | None, str | None]:
    return result.image_type, result.type_source, result.source


def test_a_fix_carries_over_to_the_advertisers_near_identical_photos_only(scene: Scene) -> None:
    first = scene.classify("dealer-a")
    assert {r.type_source for r in first.values()} == {"model"}
    scene.classify("dealer-b")
    scene.fix("dealer-a", first["red1"].image_key, image_type="Stock")

    again = scene.classify("dealer-a")
    assert sources(again["red1"]) == ("Stock", "override", "override")
    for name in ("red2", "red3"):
        assert sources(again[name]) == ("Stock", "advertiser_model", "advertiser_model")
        assert again[name].color_source == "cache" and not again[name].low_confidence
    for name in ("blue1", "blue2"):
        assert sources(again[name]) == ("Dealer", "cache", "cache")
    # The daily rollup counts the adapted answers under their source.
    scene.service.flush_rollup()
    with scene.db.read() as session:
        counted = session.execute(
            select(ClassifyDailyRow.source, func.sum(ClassifyDailyRow.count))
            .where(ClassifyDailyRow.advertiser_id == "dealer-a")
            .group_by(ClassifyDailyRow.source)
        ).all()
    assert dict(counted)["advertiser_model"] == 2
    # Another advertiser's answers do not move.
    other = scene.classify("dealer-b")
    assert {sources(r) for r in other.values()} == {("Dealer", "cache", "cache")}
    # The fix page's listing answers exactly as classify does.
    listing = list_images(scene.db, "dealer-a", ImageFilter(), adapt=scene.service.adapted)
    by_key = {item.image.image_key: item for item in listing.items}
    for result in again.values():
        answer = by_key[result.image_key].answer
        assert (answer.image_type, answer.type_source) == (result.image_type, result.type_source)
    # And so does the answer of one image (GET /v1/images/{key}, a fix's reply).
    one = current_answer(scene.db, "dealer-a", again["red2"].image_key, adapt=scene.service.adapted)
    assert sources(one) == ("Stock", "advertiser_model", "advertiser_model")


def test_the_switch_off_gives_the_models_answers_back_and_default_follows_settings(
    scene: Scene,
) -> None:
    first = scene.classify("dealer-a")
    scene.fix("dealer-a", first["red1"].image_key, image_type="Stock")
    scene.switch("dealer-a", False)
    off = scene.classify("dealer-a")
    assert sources(off["red2"]) == ("Dealer", "cache", "cache")
    assert sources(off["red1"]) == ("Stock", "override", "override")  # the fix stays
    scene.switch("dealer-a", None)  # follow the deployment's default: on here
    assert scene.classify("dealer-a")["red2"].type_source == "advertiser_model"
    scene.service.adapters.default = False
    assert scene.classify("dealer-a")["red2"].type_source == "cache"
    scene.switch("dealer-a", True)  # its own setting wins over the default
    assert scene.classify("dealer-a")["red2"].type_source == "advertiser_model"


def test_an_explicit_fix_wins_and_a_new_fix_refits_the_adapter(scene: Scene) -> None:
    first = scene.classify("dealer-a")
    scene.fix("dealer-a", first["red1"].image_key, image_type="Stock")
    scene.classify("dealer-a")
    fits = scene.service.adapters.fits
    scene.classify("dealer-a")
    assert scene.service.adapters.fits == fits  # cached while the fixes stay the same

    scene.fix("dealer-a", first["red2"].image_key, image_type="Placeholder")
    scene.fix("dealer-a", first["blue1"].image_key, color="Blue", scope="global")
    after = scene.classify("dealer-a")
    assert scene.service.adapters.fits == fits + 1
    assert sources(after["red2"]) == ("Placeholder", "override", "override")
    # A global fix made in dealer-a's name adapts its answers too.
    assert (after["blue2"].color, after["blue2"].color_source) == ("Blue", "advertiser_model")
    assert after["blue2"].source == "advertiser_model"
    # Other advertisers get the global fix itself, not the adaptation.
    other = scene.classify("dealer-b", "blue1", "blue2")
    assert (other["blue1"].color_source, other["blue2"].color_source) == ("fix", "cache")


def test_the_precedence_override_fix_scrape_adapted_model() -> None:
    row = new_image(image_type="Dealer", color="Red", confidence=0.5)
    adapted = Adapted(image_type="Stock", color="White")
    plain = resolve(row, None, None, "u", fresh=False, adapted=adapted)
    assert (plain.image_type, plain.type_source, plain.color, plain.color_source) == (
        "Stock",
        "advertiser_model",
        "White",
        "advertiser_model",
    )
    assert plain.source == "advertiser_model" and not plain.low_confidence
    scraped = resolve(row, None, "Blue", "u", fresh=False, adapted=adapted)
    assert (scraped.color, scraped.color_source, scraped.source) == ("Blue", "scrape", "scrape")
    # An adapted Placeholder has no color, unless a fix says otherwise.
    gone = resolve(row, None, None, "u", fresh=False, adapted=Adapted(image_type="Placeholder"))
    assert (gone.image_type, gone.color, gone.color_source) == ("Placeholder", None, None)
