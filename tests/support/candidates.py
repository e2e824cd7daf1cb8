"""Stored images, sightings and fix-rate history for dataset-candidate tests.

Written through the real store functions (images, ``advertiser_images``, the daily
rollup) and as real ``fix_audit`` rows; ``novelty`` is set the way the classify path
writes it, on the image row.
"""

from __future__ import annotations

import datetime as dt
from collections import Counter

from sqlalchemy import update

from cartag.imaging.decode import decode_image
from cartag.imaging.keys import content_sha256, phash
from cartag.store.advertisers import record_advertiser_images
from cartag.store.db import Database
from cartag.store.monitoring import record_counts
from cartag.store.tables import FixAuditRow, ImageRow
from tests.support.factories import add_image


def stored_image(
    db: Database,
    *,
    advertiser: str,
    seen_at: dt.datetime,
    url: str | None = None,
    data: bytes | None = None,
    confidence: float | None = 0.9,
    novelty: float | None = None,
    **overrides: object,
) -> str:
    """An image the model answered, named by ``advertiser``'s request at ``seen_at``.

    With ``data``, its content hash and pHash are those of the bytes. Returns its key.
    """
    values: dict[str, object] = {"confidence": confidence, **overrides}
    if url is not None:
        values["url"] = url
    if data is not None:
        values["content_sha256"] = content_sha256(data)
        values["phash"] = phash(decode_image(data, max_pixels=10**8).image)
    image = add_image(db, **values)
    with db.write() as session:
        record_advertiser_images(session, advertiser, dict.fromkeys([image.image_key]), seen_at)
        if novelty is not None:
            session.execute(
                update(ImageRow)
                .where(ImageRow.image_key == image.image_key)
                .values(novelty=novelty)
            )
    return image.image_key


def fix_rate_history(
    db: Database,
    advertiser: str,
    days: dict[dt.date, tuple[int, int]],
) -> None:
    """``{day: (answers, fixes)}`` of an advertiser: rollup counts and fix audit rows.

    The i-th fix of a day is of the advertiser's i-th image (fresh images): the fix rate
    counts images fixed per day, so fixes of one image on one day would count once.
    """
    most = max((fixes for _, fixes in days.values()), default=0)
    keys = [add_image(db, model_version="m1").image_key for _ in range(most)]
    with db.write() as session:
        for day, (answers, fixes) in days.items():
            if answers:
                counts: Counter[tuple[str, str, str, str, str]] = Counter(
                    {("m1", "classified", "Dealer", "Red", "model"): answers}
                )
                record_counts(session, day, advertiser, counts)
            noon = dt.datetime.combine(day, dt.time(12), dt.UTC)
            session.add_all(
                FixAuditRow(
                    image_key=keys[i],
                    advertiser_id=advertiser,
                    scope="advertiser",
                    user="alice",
                    changes={"color": {"from": "Red", "to": "Blue"}},
                    comment=None,
                    created_at=noon + dt.timedelta(minutes=i),
                )
                for i in range(fixes)
            )


def daily(
    first: dt.date, last: dt.date, answers: int, fixes: int
) -> dict[dt.date, tuple[int, int]]:
    """The same ``(answers, fixes)`` on every day from ``first`` to ``last``."""
    n = (last - first).days + 1
    return {first + dt.timedelta(days=i): (answers, fixes) for i in range(n)}
