from __future__ import annotations

import numpy as np
from sqlalchemy import update

from cartag.pipeline import fixes as fix_service
from cartag.store import images as image_repo
from cartag.store.db import Database
from cartag.store.embeddings import load_embeddings, save_embeddings
from cartag.store.tables import ImageRow
from tests.support.factories import NOW, add_image, new_image


def test_save_image_upserts_and_keeps_created_at(db: Database) -> None:
    image = add_image(db, color="Blue")
    later = NOW.replace(hour=13)
    with db.write() as session:
        image_repo.save_image(session, new_image(image_key=image.image_key, color="Green"), later)
    with db.read() as session:
        row = image_repo.get_images(session, [image.image_key])[image.image_key]
    assert row.color == "Green"
    assert row.created_at == NOW
    assert row.updated_at == later


def test_images_found_by_sha_and_urls_by_url(db: Database) -> None:
    image = add_image(db)
    with db.write() as session:
        image_repo.save_urls(
            session,
            [image_repo.UrlEntry(image.url, image.image_key, '"abc"', None, 10)],
            NOW,
        )
    with db.read() as session:
        assert image_repo.get_images_by_sha(session, [image.content_sha256 or ""])
        url = image_repo.get_urls(session, [image.url])[image.url]
    assert url.etag == '"abc"' and url.image_key == image.image_key


def test_legacy_na_color_reads_as_null(db: Database) -> None:
    image = add_image(db)
    with db.write() as session:
        session.execute(
            update(ImageRow).where(ImageRow.image_key == image.image_key).values(color="N/A")
        )
    answer = fix_service.current_answer(db, "adv-1", image.image_key)
    assert answer.color is None
    assert answer.image_type == "Dealer"


def test_many_keys_are_looked_up_in_chunks(db: Database) -> None:
    keys = [add_image(db).image_key for _ in range(3)]
    with db.read() as session:
        found = image_repo.get_images(session, keys + [f"missing-{i}" for i in range(1200)])
    assert set(found) == set(keys)


def test_embeddings_roundtrip_by_content_and_backbone(db: Database) -> None:
    vector = np.linspace(-3, 3, 1280, dtype=np.float32)
    with db.write() as session:
        save_embeddings(session, "lite0@x", {"a" * 64: vector}, NOW)
        save_embeddings(session, "lite0@x", {"a" * 64: vector * 0}, NOW)  # first one is kept
    with db.read() as session:
        found = load_embeddings(session, "lite0@x", ["a" * 64, "b" * 64])
        other = load_embeddings(session, "lite2@y", ["a" * 64])
    assert set(found) == {"a" * 64} and other == {}
    assert found["a" * 64].dtype == np.float32
    np.testing.assert_allclose(found["a" * 64], vector, atol=2e-3)


def test_any_image_is_found_by_key_or_by_bytes(db: Database) -> None:
    image = add_image(db)
    with db.read() as session:
        assert image_repo.any_image(session, [image.image_key], [])
        assert image_repo.any_image(session, ["other"], [image.content_sha256 or ""])
        assert not image_repo.any_image(session, ["other"], ["0" * 64])
        assert not image_repo.any_image(session, [], [])
