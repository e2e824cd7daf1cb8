"""Repository functions for per-advertiser settings and the images each advertiser uses.

An advertiser may opt in to re-classification after each promotion
(``reclassify_on_promote``); :func:`advertiser_image_keys` gathers the images such a
run covers (named in classify requests, jobs and fixes).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Collection

from sqlalchemy import select
from sqlalchemy.orm import Session

from cartag.store.tables import (
    AdvertiserImageRow,
    AdvertiserSettingRow,
    FixAuditRow,
    JobItemRow,
    JobRow,
)
from cartag.store.upsert import chunked, upsert


def set_advertiser(
    session: Session, advertiser_id: str, *, reclassify_on_promote: bool, now: dt.datetime
) -> AdvertiserSettingRow:
    """Create or change an advertiser's settings."""
    upsert(
        session,
        AdvertiserSettingRow,
        {
            "advertiser_id": advertiser_id,
            "reclassify_on_promote": reclassify_on_promote,
            "updated_at": now,
        },
        index_elements=["advertiser_id"],
    )
    row = session.get(AdvertiserSettingRow, advertiser_id, populate_existing=True)
    assert row is not None
    return row


def list_advertisers(session: Session) -> list[AdvertiserSettingRow]:
    """Every advertiser with settings, by id."""
    stmt = select(AdvertiserSettingRow).order_by(AdvertiserSettingRow.advertiser_id)
    return list(session.scalars(stmt))


def reclassify_advertisers(session: Session) -> list[str]:
    """Advertisers that opted in to re-classification after a promotion."""
    stmt = (
        select(AdvertiserSettingRow.advertiser_id)
        .where(AdvertiserSettingRow.reclassify_on_promote.is_(True))
        .order_by(AdvertiserSettingRow.advertiser_id)
    )
    return list(session.scalars(stmt))


def opted_in(session: Session, advertiser_id: str) -> bool:
    row = session.get(AdvertiserSettingRow, advertiser_id)
    return bool(row is not None and row.reclassify_on_promote)


def record_advertiser_images(
    session: Session, advertiser_id: str, image_keys: Collection[str], now: dt.datetime
) -> None:
    """Remember that an advertiser's request named these images (bulk upsert)."""
    rows = [
        {"advertiser_id": advertiser_id, "image_key": key, "last_seen_at": now}
        for key in sorted(set(image_keys))
    ]
    for chunk in chunked(rows, 1000):
        upsert(
            session,
            AdvertiserImageRow,
            chunk,
            index_elements=["advertiser_id", "image_key"],
            update=["last_seen_at"],
        )


def advertiser_image_keys(session: Session, advertiser_id: str) -> set[str]:
    """Every image key an advertiser is known to use: classify requests, jobs and fixes."""
    keys = set(
        session.scalars(
            select(AdvertiserImageRow.image_key).where(
                AdvertiserImageRow.advertiser_id == advertiser_id
            )
        )
    )
    keys.update(
        session.scalars(
            select(FixAuditRow.image_key).where(FixAuditRow.advertiser_id == advertiser_id)
        )
    )
    results = session.scalars(
        select(JobItemRow.result)
        .join(JobRow, JobRow.id == JobItemRow.job_id)
        .where(JobRow.advertiser_id == advertiser_id, JobItemRow.result.is_not(None))
    )
    for result in results:
        key = result.get("image_key") if isinstance(result, dict) else None
        if key:
            keys.add(str(key))
    return keys
