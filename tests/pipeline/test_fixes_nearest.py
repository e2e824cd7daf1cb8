"""find_fixes's vectorised pHash search finds the very fixes of the per-image search it
replaced, on randomised inventories full of near duplicates and ties.

The reference below is the previous implementation, kept as it was (its candidate read
included): per image and scope, every fix sharing a 16-bit band, the nearest within
``max_distance`` bits, then the one latest among the candidate rows.
"""

from __future__ import annotations

import datetime as dt
import random
import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import replace

import pytest
from sqlalchemy import func, or_, select
from sqlalchemy.orm import Session

from cartag.imaging.keys import hamming
from cartag.pipeline import fixes as fix_service
from cartag.pipeline.fixes import FixLabels, find_fixes
from cartag.store import fixes as fix_repo
from cartag.store import images as image_repo
from cartag.store.db import Database
from cartag.store.tables import FixRow
from cartag.store.upsert import chunked, in_values
from tests.support.factories import NOW, new_image

ADVERTISER = "dealer-1"


def _reference_candidates(
    session: Session,
    scope_keys: Sequence[str],
    images: Sequence[tuple[str, str | None]],
    max_distance: int,
) -> list[FixRow]:
    in_scope = FixRow.scope_key.in_(list(scope_keys))
    whole = max(fix_repo.FEW_FIXES, len(images))
    count = select(func.count()).select_from(
        select(FixRow.id).where(in_scope).limit(whole + 1).subquery()
    )
    held = session.scalar(count) or 0
    if held == 0:
        return []
    if held <= whole:
        rows = list(session.scalars(select(FixRow).where(in_scope).order_by(FixRow.updated_at)))
        keys = {key for key, _ in images}
        phashes = {ph for _, ph in images if ph}
        if max_distance == 0:
            return [row for row in rows if row.image_key in keys or row.phash in phashes]
        bands: list[set[int]] = [set(), set(), set(), set()]
        for ph in phashes:
            for i, band in enumerate(fix_repo.phash_bands(ph)):
                if band is not None:
                    bands[i].add(band)
        return [
            row
            for row in rows
            if row.image_key in keys
            or row.phash_b0 in bands[0]
            or row.phash_b1 in bands[1]
            or row.phash_b2 in bands[2]
            or row.phash_b3 in bands[3]
        ]
    found: list[FixRow] = []
    for chunk in chunked(images, 250):
        chunk_keys = [key for key, _ in chunk]
        chunk_phashes = [ph for _, ph in chunk if ph]
        conditions = [in_values(session, FixRow.image_key, chunk_keys)]
        if chunk_phashes and max_distance == 0:
            conditions.append(in_values(session, FixRow.phash, chunk_phashes))
        elif chunk_phashes:
            chunk_bands = [fix_repo.phash_bands(ph) for ph in chunk_phashes]
            columns = (FixRow.phash_b0, FixRow.phash_b1, FixRow.phash_b2, FixRow.phash_b3)
            for i, column in enumerate(columns):
                conditions.append(in_values(session, column, {b[i] for b in chunk_bands}))
        stmt = select(FixRow).where(or_(*conditions), in_scope).order_by(FixRow.updated_at)
        found.extend(session.scalars(stmt))
    return found


def _reference_nearest(
    near: dict[tuple[str, int, int], list[tuple[int, str, FixRow]]],
    scope: str,
    phash: str,
    max_distance: int,
) -> FixRow | None:
    best: tuple[int, int, FixRow] | None = None
    for band, value in enumerate(fix_repo.phash_bands(phash)):
        if value is None:
            continue
        for order, other, row in near.get((scope, band, value), ()):
            distance = hamming(phash, other)
            if distance <= max_distance and (best is None or (distance, -order) < best[:2]):
                best = (distance, -order, row)
    return best[2] if best is not None else None


def _reference_find_fixes(
    session: Session,
    advertiser_id: str,
    images: Sequence[tuple[str, str | None]],
    *,
    max_distance: int = 0,
) -> dict[str, FixLabels]:
    if not images:
        return {}
    max_distance = min(max_distance, fix_repo.MAX_PHASH_DISTANCE)
    by_key: dict[tuple[str, str], FixRow] = {}
    near: dict[tuple[str, int, int], list[tuple[int, str, FixRow]]] = defaultdict(list)
    rows = _reference_candidates(session, ["", advertiser_id], images, max_distance)
    for order, row in enumerate(rows):
        by_key[(row.image_key, row.scope_key)] = row
        if row.phash:
            for band, value in enumerate(fix_repo.phash_bands(row.phash)):
                if value is not None:
                    near[(row.scope_key, band, value)].append((order, row.phash, row))
    found: dict[str, FixLabels] = {}
    by_phash: dict[str, list[FixRow]] = {}
    for key, ph in images:
        labels: list[FixRow | None] = []
        for scope in (advertiser_id, ""):
            fix = by_key.get((key, scope))
            if fix is None and ph:
                fix = _reference_nearest(near, scope, ph, max_distance)
                if fix is not None and fix.color is not None:
                    by_phash.setdefault(key, []).append(fix)
            labels.append(fix)
        if labels[0] is not None or labels[1] is not None:
            found[key] = FixLabels(override=labels[0], global_fix=labels[1])
    for key, colorless in fix_service._recolored(session, by_phash).items():
        found[key] = replace(found[key], colorless=colorless)
    return found


def _flip(value: int, rng: random.Random, bits: int) -> int:
    for bit in rng.sample(range(64), bits):
        value ^= 1 << bit
    return value


def _inventory(db: Database, rng: random.Random, count: int) -> list[tuple[str, str | None]]:
    """``count`` stored images, most of them 0-4 bits from one of a few shots (many near
    duplicates, many ties), some without a pHash; fixes on a third of them in three
    scopes (global, this advertiser's, another's), each at its own time."""
    shots = [rng.getrandbits(64) for _ in range(max(3, count // 40))]
    # Shots that share a band with another shot, and one near zero (a blank card).
    shots += [(shots[0] & ~0xFFFF) | rng.getrandbits(16), rng.getrandbits(4)]
    images = []
    for _ in range(count):
        if rng.random() < 0.05:
            phash = None
        else:
            phash = f"{_flip(rng.choice(shots), rng, rng.choice((0, 0, 1, 1, 2, 3, 4))):016x}"
        images.append(
            new_image(phash=phash, color=rng.choice(("Red", "Blue", None)), image_type="Dealer")
        )
    with db.write() as session:
        image_repo.save_images(session, images, NOW)
        stored = image_repo.get_images(session, [image.image_key for image in images])
        when = NOW
        for image in images:
            for scope_key in ("", ADVERTISER, "dealer-2"):
                if rng.random() < 0.3:
                    when += dt.timedelta(seconds=rng.choice((1, 1, 60)))
                    fix_repo.save_fix(
                        session,
                        image=stored[image.image_key],
                        scope=fix_repo.GLOBAL if scope_key == "" else fix_repo.ADVERTISER,
                        scope_key=scope_key,
                        image_type=rng.choice(("Stock", "Placeholder")),
                        color=rng.choice(("Grey", None)),
                        user="staff",
                        now=when,
                    )
    asked: list[tuple[str, str | None]] = [(i.image_key, i.phash) for i in images]
    # Images nobody stored (a classify's new ones), and a key asked twice.
    for n in range(count // 10):
        phash = f"{_flip(rng.choice(shots), rng, rng.choice((0, 1, 2, 3))):016x}"
        asked.append((f"v1:unstored-{n}", phash))
    asked.append((asked[0][0], asked[1][1]))
    rng.shuffle(asked)
    return asked


def _ids(found: dict[str, FixLabels]) -> dict[str, tuple[int | None, int | None, frozenset[int]]]:
    return {
        key: (
            labels.override.id if labels.override else None,
            labels.global_fix.id if labels.global_fix else None,
            labels.colorless,
        )
        for key, labels in found.items()
    }


def _ties(session: Session, asked: Sequence[tuple[str, str | None]], max_distance: int) -> int:
    """(image, scope) pairs where two fixes or more are the nearest: the tie rule decides."""
    rows = list(session.scalars(select(FixRow).where(FixRow.phash.is_not(None))))
    ties = 0
    for _, ph in asked:
        if ph is None:
            continue
        for scope in ("", ADVERTISER):
            distances = [hamming(ph, r.phash) for r in rows if r.scope_key == scope and r.phash]
            close = sorted(d for d in distances if d <= max_distance)
            ties += len(close) > 1 and close[0] == close[1]
    return ties


@pytest.mark.slow
@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("all_pairs", [0, 1 << 30], ids=["band join", "every pair"])
def test_the_same_fixes_as_the_per_image_search(
    db: Database, seed: int, all_pairs: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Both searches: every (image, fix) pair compared (a classify's few images), or the
    # join on shared bands.
    monkeypatch.setattr(fix_service, "_ALL_PAIRS", all_pairs)
    rng = random.Random(seed)
    asked = _inventory(db, rng, 400)
    with db.read() as session:
        assert _ties(session, asked, 3) > 20 and _ties(session, asked, 0) > 5
        for max_distance in (0, 1, 2, 3, 9, -1):
            expected = _reference_find_fixes(session, ADVERTISER, asked, max_distance=max_distance)
            found = find_fixes(session, ADVERTISER, asked, max_distance=max_distance)
            assert _ids(found) == _ids(expected), max_distance
            if max_distance >= 0:
                # Some found through the pHash alone, colors kept back, overrides.
                assert any(key.startswith("v1:unstored-") for key in found)
                assert any(labels.colorless for labels in found.values())
                assert any(labels.override for labels in found.values())
        # A classify's batch: a few images, the same answers one at a time.
        for key, ph in asked[:25]:
            one = find_fixes(session, ADVERTISER, [(key, ph)], max_distance=3)
            assert _ids(one) == _ids(
                _reference_find_fixes(session, ADVERTISER, [(key, ph)], max_distance=3)
            )


@pytest.mark.slow
@pytest.mark.parametrize("seed", [3, 4])
def test_the_same_fixes_whether_candidates_are_read_at_once_or_per_chunk(
    db: Database, seed: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Scopes holding more fixes than the images asked about are read 250 images at a
    # time; a fix matching several chunks comes once, in time order, so the fixes found
    # are those of one read of the scopes' fixes (the latest of tied fixes wins, not the
    # one whose chunk came last).
    rng = random.Random(seed)
    asked = _inventory(db, rng, 900)
    some = asked[:400]
    with db.read() as session:
        held = session.scalar(select(func.count()).where(FixRow.scope_key.in_(["", ADVERTISER])))
        assert held is not None and held > len(some) > 250
        for max_distance in (0, 3):
            monkeypatch.setattr(fix_repo, "FEW_FIXES", 1 << 30)
            whole = find_fixes(session, ADVERTISER, some, max_distance=max_distance)
            monkeypatch.setattr(fix_repo, "FEW_FIXES", 10)
            chunked_ = find_fixes(session, ADVERTISER, some, max_distance=max_distance)
            assert _ids(chunked_) == _ids(whole) and whole


def test_of_two_tied_fixes_the_latest_wins_when_the_older_comes_in_a_later_chunk(
    db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    # An image 1 bit from two fixed photos: the newer fix must win. The older fix is also
    # a candidate of the second chunk (its own key is asked there), the newer one only of
    # the first: read per chunk, the older used to come last and win.
    monkeypatch.setattr(fix_repo, "FEW_FIXES", 10)
    q = 0x0123_4567_89AB_CDEF
    old_photo = new_image(phash=f"{q ^ 1:016x}", image_type="Dealer", color="Red")
    new_photo = new_image(phash=f"{q ^ 2:016x}", image_type="Dealer", color="Red")
    others = [new_image(phash=None, image_type="Dealer", color="Red") for _ in range(300)]
    with db.write() as session:
        image_repo.save_images(session, [old_photo, new_photo, *others], NOW)
        stored = image_repo.get_images(
            session, [i.image_key for i in (old_photo, new_photo, *others)]
        )
        for n, (image, label) in enumerate(
            [(old_photo, "Stock"), (new_photo, "Placeholder")]
            + [(other, "Stock") for other in others]
        ):
            fix_repo.save_fix(
                session,
                image=stored[image.image_key],
                scope=fix_repo.GLOBAL,
                scope_key="",
                image_type=label,
                color=None,
                user="staff",
                now=NOW + dt.timedelta(seconds=n),
            )
    asked: list[tuple[str, str | None]] = [("v1:new-upload", f"{q:016x}")]
    asked += [(other.image_key, None) for other in others[:260]]
    asked += [(old_photo.image_key, None)]  # in the second chunk, by key only
    with db.read() as session:
        found = find_fixes(session, ADVERTISER, asked, max_distance=3)
    fix = found["v1:new-upload"].global_fix
    assert fix is not None and fix.image_key == new_photo.image_key


def test_an_empty_or_unfixed_inventory_finds_nothing(db: Database) -> None:
    with db.read() as session:
        assert find_fixes(session, ADVERTISER, [], max_distance=3) == {}
        assert find_fixes(session, ADVERTISER, [("v1:x", "0" * 16), ("v1:y", None)]) == {}


@pytest.mark.slow
def test_a_card_fixed_many_times_is_searched_once_per_distinct_phash(sqlite_db: Database) -> None:
    # Placeholder cards share a pHash: 5,000 images of one card (0-1 bits apart), 1,000 of
    # them fixed, shared every band with every fix, and the per-image search compared them
    # pair by pair (20 million distances: 5 s). Identical pHashes are searched once now.
    rng = random.Random(5)
    card = rng.getrandbits(64)
    images = [new_image(phash=f"{_flip(card, rng, rng.choice((0, 1))):016x}") for _ in range(5000)]
    with sqlite_db.write() as session:
        image_repo.save_images(session, images, NOW)
        stored = image_repo.get_images(session, [image.image_key for image in images[:1000]])
        for n, row in enumerate(stored.values()):
            fix_repo.save_fix(
                session,
                image=row,
                scope=fix_repo.GLOBAL,
                scope_key="",
                image_type="Placeholder",
                color=None,
                user="staff",
                now=NOW + dt.timedelta(seconds=n),
            )
    asked = [(image.image_key, image.phash) for image in images]
    with sqlite_db.read() as session:
        started = time.perf_counter()
        found = find_fixes(session, ADVERTISER, asked, max_distance=3)
        took = time.perf_counter() - started
        assert len(found) == 5000
        unfixed = [pair for pair in asked[1000:] if pair[1] == asked[0][1]][:50]
        assert _ids({k: found[k] for k, _ in unfixed}) == _ids(
            _reference_find_fixes(session, ADVERTISER, unfixed, max_distance=3)
        )
    assert took < 1.0, f"{took:.2f} s"
