"""Repository functions for per-advertiser settings and the images each advertiser uses.

An advertiser may opt in to re-classification after each promotion
(``reclassify_on_promote``); :func:`advertiser_image_keys` gathers the images such a
run covers (named in classify requests, jobs and fixes).

*An advertiser's images* (the fix page's listing, a scoped key's reach) are the images
its classify requests and jobs named (``advertiser_images``) and those fixed in its
name (``fix_audit``): :func:`advertiser_images`, :func:`uses_image`,
:func:`advertiser_summaries`, a page of them with :func:`summary_page`.
"""

from __future__ import annotations

import datetime as dt
import enum
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Any, Final, NamedTuple

from sqlalchemy import CompoundSelect, func, select, union
from sqlalchemy.orm import Session

from cartag.store.paging import clamped_page
from cartag.store.tables import (
    AdvertiserImageRow,
    AdvertiserSettingRow,
    FixAuditRow,
    FixRow,
    ImageRow,
    JobItemRow,
    JobRow,
)
from cartag.store.upsert import chunked, upsert


@dataclass(frozen=True)
class AdvertiserImage:
    """One image of an advertiser: the model's stored answer and when it was last named.

    The answer fields only (no score vectors): a listing loads every image of an
    advertiser. ``last_seen_at`` is None for an image known only through a fix. ``url``
    is the image's (the one thumbnails fetch), ``own_url`` the one this advertiser named
    it by (None: not known).
    """

    image_key: str
    url: str
    content_sha256: str | None
    phash: str | None
    image_type: str | None
    color: str | None
    confidence: float | None
    model_version: str | None
    color_reason: str | None
    updated_at: dt.datetime
    last_seen_at: dt.datetime | None
    own_url: str | None = None

    @property
    def shown_url(self) -> str:
        """The URL to show for this advertiser: its own, else the image's (``url``, the
        first it was fetched from, perhaps another advertiser's: rows before 0010)."""
        return self.own_url or self.url


@dataclass(frozen=True)
class AdvertiserSummary:
    """An advertiser with images or settings, and its counts.

    Attributes:
        advertiser_id: The id classify requests use.
        images: How many distinct images it is known to use (requests, jobs, fixes).
        overrides: How many of its own overrides (advertiser-scoped fixes) are in effect.
        last_seen_at: When a request last named one of its images (None: never).
        reclassify_on_promote: Its re-classification setting (False without settings).
        adapt_answers: Its advertiser-aware answers setting (None: the deployment's default).
        settings_updated_at: When its settings last changed (None: it has none).
    """

    advertiser_id: str
    images: int
    overrides: int
    last_seen_at: dt.datetime | None
    reclassify_on_promote: bool
    settings_updated_at: dt.datetime | None
    adapt_answers: bool | None = None


class Keep(enum.Enum):
    """A setting :func:`set_advertiser` leaves as it is."""

    KEEP = "keep"


KEEP: Final = Keep.KEEP


def set_advertiser(
    session: Session,
    advertiser_id: str,
    *,
    reclassify_on_promote: bool | Keep = KEEP,
    adapt_answers: bool | None | Keep = KEEP,
    now: dt.datetime,
) -> AdvertiserSettingRow:
    """Create or change an advertiser's settings; :data:`KEEP` leaves one as it is.

    Args:
        session: A write session.
        advertiser_id: Whose settings.
        reclassify_on_promote: Re-classify its images after a promotion (a new row: off).
        adapt_answers: Advertiser-aware answers on/off; None: follow the deployment's
            ``CARTAG_ADVERTISER_ADAPTATION`` (a new row: None).
        now: Recorded as ``updated_at``.
    """
    values: dict[str, object] = {"advertiser_id": advertiser_id, "updated_at": now}
    if not isinstance(reclassify_on_promote, Keep):
        values["reclassify_on_promote"] = reclassify_on_promote
    if not isinstance(adapt_answers, Keep):
        values["adapt_answers"] = adapt_answers
    changed = [name for name in values if name != "advertiser_id"]
    # A new row takes the column defaults for what is kept.
    insert = {"reclassify_on_promote": False, "adapt_answers": None, **values}
    upsert(session, AdvertiserSettingRow, insert, index_elements=["advertiser_id"], update=changed)
    row = session.get(AdvertiserSettingRow, advertiser_id, populate_existing=True)
    assert row is not None
    return row


def adaptation_setting(session: Session, advertiser_id: str) -> bool | None:
    """An advertiser's own adaptation setting (None: none, follow the deployment's)."""
    return session.scalar(
        select(AdvertiserSettingRow.adapt_answers).where(
            AdvertiserSettingRow.advertiser_id == advertiser_id
        )
    )


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
    session: Session, advertiser_id: str, urls: Mapping[str, str | None], now: dt.datetime
) -> None:
    """Remember that an advertiser's request named these images (bulk upsert).

    Args:
        session: A write session.
        advertiser_id: Whose request it was.
        urls: Image key -> the URL the request named it by (its password redacted;
            None: not known, the image's own URL is shown).
        now: When.
    """
    rows = [
        {"advertiser_id": advertiser_id, "image_key": key, "last_seen_at": now, "url": urls[key]}
        for key in sorted(urls)
    ]
    for chunk in chunked(rows, 1000):
        upsert(
            session,
            AdvertiserImageRow,
            chunk,
            index_elements=["advertiser_id", "image_key"],
            update=["last_seen_at", "url"],
        )


def advertiser_url(session: Session, advertiser_ids: Collection[str], image_key: str) -> str | None:
    """The URL one of ``advertiser_ids`` last named the image by (None: not known)."""
    stmt = (
        select(AdvertiserImageRow.url)
        .where(
            AdvertiserImageRow.image_key == image_key,
            AdvertiserImageRow.advertiser_id.in_(sorted(advertiser_ids)),
            AdvertiserImageRow.url.is_not(None),
        )
        .order_by(AdvertiserImageRow.last_seen_at.desc())
        .limit(1)
    )
    return session.scalar(stmt)


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


def _image_keys_of(advertiser_id: str) -> CompoundSelect[str]:
    """The keys of an advertiser's images: named by its requests, or fixed in its name."""
    return (
        select(AdvertiserImageRow.image_key)
        .where(AdvertiserImageRow.advertiser_id == advertiser_id)
        .union(select(FixAuditRow.image_key).where(FixAuditRow.advertiser_id == advertiser_id))
    )


class ImageAnswer(NamedTuple):
    """What ordering and filtering an advertiser's listing needs of one image: the stored
    answer without its URLs, and (when asked for) when it was last named.

    A listing reads this for every image of the advertiser, so it is a plain row; the
    page's images are then read whole (:func:`advertiser_images` with ``keys``).
    """

    image_key: str
    phash: str | None
    image_type: str | None
    color: str | None
    confidence: float | None
    model_version: str | None
    color_reason: str | None
    updated_at: dt.datetime | None = None
    last_seen_at: dt.datetime | None = None


def advertiser_answers(
    session: Session, advertiser_id: str, *, with_times: bool = False
) -> list[ImageAnswer]:
    """Every stored image of an advertiser, as :class:`ImageAnswer`, in image-key order.

    Args:
        session: Any session.
        advertiser_id: Whose images (see the module doc).
        with_times: Also read ``updated_at`` and ``last_seen_at`` (the "recent" order);
            without, they are None: converting two times per image is most of the read.
    """
    keys = _image_keys_of(advertiser_id).subquery()
    columns: list[Any] = [
        ImageRow.image_key,
        ImageRow.phash,
        ImageRow.image_type,
        ImageRow.color,
        ImageRow.confidence,
        ImageRow.model_version,
        ImageRow.color_reason,
    ]
    stmt = select(*columns).join(keys, keys.c.image_key == ImageRow.image_key)
    if with_times:
        seen = (
            select(AdvertiserImageRow.image_key, AdvertiserImageRow.last_seen_at)
            .where(AdvertiserImageRow.advertiser_id == advertiser_id)
            .subquery()
        )
        stmt = stmt.add_columns(ImageRow.updated_at, seen.c.last_seen_at).outerjoin(
            seen, seen.c.image_key == ImageRow.image_key
        )
    return [ImageAnswer(*row) for row in session.execute(stmt.order_by(ImageRow.image_key))]


def advertiser_images(
    session: Session, advertiser_id: str, keys: Collection[str] | None = None
) -> list[AdvertiserImage]:
    """Every stored image of an advertiser with its model answer, in image-key order.

    Args:
        session: Any session.
        advertiser_id: Whose images (and whose URLs and times of naming them).
        keys: Only these of its images (a listing's page); None: all.
    """
    if keys is not None and not keys:
        return []
    mine = _image_keys_of(advertiser_id).subquery()
    seen = (
        select(
            AdvertiserImageRow.image_key, AdvertiserImageRow.last_seen_at, AdvertiserImageRow.url
        )
        .where(AdvertiserImageRow.advertiser_id == advertiser_id)
        .subquery()
    )
    stmt = (
        select(
            ImageRow.image_key,
            ImageRow.url,
            ImageRow.content_sha256,
            ImageRow.phash,
            ImageRow.image_type,
            ImageRow.color,
            ImageRow.confidence,
            ImageRow.model_version,
            ImageRow.color_reason,
            ImageRow.updated_at,
            seen.c.last_seen_at,
            seen.c.url,
        )
        .join(mine, mine.c.image_key == ImageRow.image_key)
        .outerjoin(seen, seen.c.image_key == ImageRow.image_key)
        .order_by(ImageRow.image_key)
    )
    if keys is not None:
        stmt = stmt.where(ImageRow.image_key.in_(sorted(keys)))
    return [AdvertiserImage(*row) for row in session.execute(stmt)]


def uses_image(session: Session, advertiser_ids: Collection[str], image_key: str) -> bool:
    """Whether ``image_key`` is an image of one of ``advertiser_ids`` (see module doc)."""
    ids = sorted(advertiser_ids)
    named = select(AdvertiserImageRow.image_key).where(
        AdvertiserImageRow.image_key == image_key, AdvertiserImageRow.advertiser_id.in_(ids)
    )
    fixed = select(FixAuditRow.image_key).where(
        FixAuditRow.image_key == image_key, FixAuditRow.advertiser_id.in_(ids)
    )
    return session.execute(named.limit(1)).first() is not None or (
        session.execute(fixed.limit(1)).first() is not None
    )


def advertiser_ids(session: Session, advertiser_ids: Collection[str] | None = None) -> list[str]:
    """The ids of :func:`advertiser_summaries`, without their counts, in the same order.

    A page of the advertisers (the fix page's index) reads these, and the counts of its
    own only. Sorted here, not by the database: PostgreSQL's collation would order ids
    otherwise than SQLite and the summaries do.

    Args:
        session: Any session.
        advertiser_ids: Only these (a scoped key's); None: all.
    """
    named = select(AdvertiserImageRow.advertiser_id).distinct()
    fixed = select(FixAuditRow.advertiser_id).distinct()
    configured = select(AdvertiserSettingRow.advertiser_id)
    if advertiser_ids is not None:
        ids = sorted(advertiser_ids)
        named = named.where(AdvertiserImageRow.advertiser_id.in_(ids))
        fixed = fixed.where(FixAuditRow.advertiser_id.in_(ids))
        configured = configured.where(AdvertiserSettingRow.advertiser_id.in_(ids))
    return sorted(set(session.scalars(union(named, fixed, configured))))


# Advertisers per page of a listing (API, command line), by default and at most: a row
# each, 100 is an answer of about 20 KB.
PAGE_LIMIT: Final[int] = 100
MAX_PAGE_LIMIT: Final[int] = 500


@dataclass(frozen=True)
class SummaryPage:
    """One page of the advertisers whose id holds a search, by id, with their counts.

    Attributes:
        summaries: This page's advertisers, by id.
        total: How many advertisers match the search.
        page: The page number (1-based), clamped to the last page.
        pages: How many pages the matches fill (at least 1).
        limit: Advertisers per page.
        search: What their ids hold ("": any id).
        everyone: How many advertisers there are (in the scope), whatever the search.
    """

    summaries: list[AdvertiserSummary]
    total: int
    page: int
    pages: int
    limit: int
    search: str
    everyone: int


def summary_page(
    session: Session,
    scope: Collection[str] | None = None,
    *,
    search: str = "",
    page: int = 1,
    limit: int = PAGE_LIMIT,
) -> SummaryPage:
    """A page of :func:`advertiser_summaries`: every id is read and searched, the counts
    only for the page's (20,000 advertisers' counts were a 3.6 MB answer of 0.3 s).

    Args:
        session: Any session.
        scope: Only these advertisers (a scoped key's); None: all.
        search: Only ids that hold this, ignoring case (a prefix or any part of one).
        page: 1-based; past the end: the last page.
        limit: Advertisers per page (at least 1).
    """
    ids = advertiser_ids(session, scope)
    folded = search.casefold()
    matching = [i for i in ids if folded in i.casefold()] if folded else ids
    page, pages = clamped_page(len(matching), page, limit)
    shown = matching[(page - 1) * limit : page * limit]
    return SummaryPage(
        summaries=advertiser_summaries(session, shown) if shown else [],
        total=len(matching),
        page=page,
        pages=pages,
        limit=limit,
        search=search,
        everyone=len(ids),
    )


def advertiser_summaries(
    session: Session, advertiser_ids: Collection[str] | None = None
) -> list[AdvertiserSummary]:
    """Every advertiser that has images or settings, by id, with its counts.

    Args:
        session: Any session.
        advertiser_ids: Only these (a scoped key's); None: all.
    """
    pairs = union(
        select(AdvertiserImageRow.advertiser_id, AdvertiserImageRow.image_key),
        select(FixAuditRow.advertiser_id, FixAuditRow.image_key),
    ).subquery()
    images_q = select(pairs.c.advertiser_id, func.count()).group_by(pairs.c.advertiser_id)
    seen_q = select(
        AdvertiserImageRow.advertiser_id, func.max(AdvertiserImageRow.last_seen_at)
    ).group_by(AdvertiserImageRow.advertiser_id)
    overrides_q = (
        select(FixRow.scope_key, func.count())
        .where(FixRow.scope == "advertiser")
        .group_by(FixRow.scope_key)
    )
    settings_q = select(AdvertiserSettingRow)
    if advertiser_ids is not None:
        ids = sorted(advertiser_ids)
        images_q = images_q.where(pairs.c.advertiser_id.in_(ids))
        seen_q = seen_q.where(AdvertiserImageRow.advertiser_id.in_(ids))
        overrides_q = overrides_q.where(FixRow.scope_key.in_(ids))
        settings_q = settings_q.where(AdvertiserSettingRow.advertiser_id.in_(ids))
    images: dict[str, int] = {a: int(n) for a, n in session.execute(images_q)}
    seen = {row[0]: row[1] for row in session.execute(seen_q)}
    overrides: dict[str, int] = {a: int(n) for a, n in session.execute(overrides_q)}
    settings = {row.advertiser_id: row for row in session.scalars(settings_q)}
    return [
        AdvertiserSummary(
            advertiser_id=advertiser_id,
            images=images.get(advertiser_id, 0),
            overrides=overrides.get(advertiser_id, 0),
            last_seen_at=seen.get(advertiser_id),
            reclassify_on_promote=bool(
                advertiser_id in settings and settings[advertiser_id].reclassify_on_promote
            ),
            settings_updated_at=(
                settings[advertiser_id].updated_at if advertiser_id in settings else None
            ),
            adapt_answers=(
                settings[advertiser_id].adapt_answers if advertiser_id in settings else None
            ),
        )
        for advertiser_id in sorted(set(images) | set(settings))
    ]
