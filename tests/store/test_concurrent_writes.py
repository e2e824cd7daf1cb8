"""Concurrent writers of the same rows on PostgreSQL: no deadlock, no duplicate-key error.

Two overlapping classify requests store the same URLs and images in their own (request)
order. On PostgreSQL each row an upsert touches stays locked until commit, so two
transactions writing the same rows in opposite orders deadlocked, and one request was
answered 503 (seen with two servers and shuffled inventories). The repositories write
rows in key order, so concurrent writers queue up instead. Rows made on first use
(a dataset's next version, a model alias) were read-then-inserted, so two processes at
once both inserted and the second failed on the duplicate key.

The interleaving is made deterministic with a third transaction: it holds one row,
the first writer blocks on it while holding the rows before it, the second writer
blocks on the first; then the holder commits.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from sqlalchemy import Connection, event, text
from sqlalchemy.orm import Session

from cartag.clock import FakeClock
from cartag.models.classifier import make_prediction
from cartag.models.color_providers import ColorAnswer
from cartag.net.outcomes import Fetched, Validators
from cartag.pipeline.outcomes import New, match_known, store_new
from cartag.store import datasets as dataset_repo
from cartag.store import images as image_repo
from cartag.store import model_versions as model_repo
from cartag.store.cache import LookupCache
from cartag.store.db import Database
from cartag.telemetry import Telemetry
from tests.support.db import fresh_database
from tests.support.factories import NOW, add_image, new_image
from tests.support.fakes import FixedClassifier

# Writes rows named by letters in a session's transaction, in the order given.
Write = Callable[[Session, list[str]], None]


@pytest.fixture
def pg_db(tmp_path: Path) -> Iterator[Database]:
    # SQLite runs one writer at a time (BEGIN IMMEDIATE): no deadlock there.
    with fresh_database("postgresql", tmp_path) as database:
        yield database


class _Backends:
    """The PostgreSQL backend pid of each thread's latest transaction on an engine."""

    def __init__(self, db: Database) -> None:
        self.pids: dict[int, int] = {}
        event.listen(db.engine, "begin", self._begin)

    def _begin(self, conn: Connection) -> None:
        dbapi = conn.connection.dbapi_connection
        assert dbapi is not None
        self.pids[threading.get_ident()] = dbapi.info.backend_pid  # type: ignore[attr-defined]


def _save_urls(image_key: str) -> Write:
    def write(session: Session, names: list[str]) -> None:
        entries = [
            image_repo.UrlEntry(f"https://cdn.example/{n}", image_key, None, None, 1) for n in names
        ]
        image_repo.save_urls(session, entries, NOW)

    return write


def _save_images(session: Session, names: list[str]) -> None:
    image_repo.save_images(session, [new_image(image_key=f"v1:{n}") for n in names], NOW)


class _Writer(threading.Thread):
    """Runs ``run(names)`` (its own transactions); remembers its error."""

    def __init__(self, run: Callable[[list[str]], object], names: list[str]) -> None:
        super().__init__(daemon=True)
        self.call, self.names = run, names
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            self.call(self.names)
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            self.error = exc


def _wait_blocked(db: Database, backends: _Backends, writer: _Writer) -> None:
    """Wait until ``writer``'s transaction waits for a lock."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and writer.is_alive():
        pid = backends.pids.get(writer.ident or 0)
        with db.read() as session:
            waiting = session.scalar(
                text("SELECT count(*) FROM pg_locks WHERE pid = :pid AND NOT granted"),
                {"pid": pid},
            )
        if waiting:
            return
        time.sleep(0.02)
    raise AssertionError(f"the writer of {writer.names} never waited for a lock ({writer.error})")


def _second_waits_for_first(
    db: Database, first: Callable[[Session], object], second: Callable[[Session], object]
) -> None:
    """Run ``second`` in its own transaction while ``first``'s is open, wait until it
    waits for ``first``'s locks, then commit ``first``: ``second`` must then succeed."""
    backends = _Backends(db)

    def run(_: list[str]) -> None:
        with db.write() as session:
            second(session)

    with db.write() as holder:
        first(holder)
        holder.flush()
        other = _Writer(run, ["second"])
        other.start()
        _wait_blocked(db, backends, other)
    other.join(30)
    assert other.error is None


def _in_transaction(db: Database, write: Write) -> Callable[[list[str]], None]:
    def run(names: list[str]) -> None:
        with db.write() as session:
            write(session, names)

    return run


def _opposite_orders(
    db: Database,
    hold: Write,
    run: Callable[[list[str]], object],
    run_second: Callable[[list[str]], object] | None = None,
) -> list[BaseException]:
    """Two writers of rows a and b in opposite orders, made to interleave as a race can.

    Written in the order given, the first holds a and waits for c, the second holds b
    and waits for a; once c is free, the first waits for b: a deadlock. In key order,
    the first holds a and b, and the second waits for a, then goes on. The second
    writer is ``run_second`` where given, else ``run`` too.
    """
    backends = _Backends(db)
    with db.write() as holder:
        hold(holder, ["c"])  # held until this block ends
        first = _Writer(run, ["a", "c", "b"])
        first.start()
        _wait_blocked(db, backends, first)
        second = _Writer(run_second or run, ["b", "a"])
        second.start()
        _wait_blocked(db, backends, second)
    for writer in (first, second):
        writer.join(30)
        assert not writer.is_alive()
    return [w.error for w in (first, second) if w.error is not None]


@pytest.mark.services
def test_urls_written_in_opposite_orders_do_not_deadlock(pg_db: Database) -> None:
    image = add_image(pg_db)
    write = _save_urls(image.image_key)
    assert _opposite_orders(pg_db, write, _in_transaction(pg_db, write)) == []
    with pg_db.read() as session:
        urls = image_repo.get_urls(session, [f"https://cdn.example/{n}" for n in "abc"])
    assert len(urls) == 3


@pytest.mark.services
def test_images_written_in_opposite_orders_do_not_deadlock(pg_db: Database) -> None:
    assert _opposite_orders(pg_db, _save_images, _in_transaction(pg_db, _save_images)) == []
    with pg_db.read() as session:
        assert len(image_repo.get_images(session, [f"v1:{n}" for n in "abc"])) == 3


@pytest.mark.services
def test_copies_of_cached_bytes_in_opposite_orders_do_not_deadlock(pg_db: Database) -> None:
    # Downloads whose bytes are cached under another key get that answer under their
    # own key (pipeline.outcomes.match_known), one image at a time.
    source = add_image(pg_db)
    sha = source.content_sha256 or ""

    def item(name: str) -> New:
        url = f"https://cdn.example/{name}.jpg"
        fetched = Fetched(url, url, b"x" * 10, Validators(None, None, 10), content_type=None)
        return New(fetched, f"v1:{name}", sha)

    def copy(names: list[str]) -> None:
        new = [item(n) for n in names]
        found = match_known(pg_db, LookupCache(), Telemetry(), new, [], FakeClock(NOW))
        assert set(found) == {n.key for n in new}

    assert _opposite_orders(pg_db, _save_images, copy) == []
    with pg_db.read() as session:
        copied = image_repo.get_images(session, [f"v1:{n}" for n in "ab"])
    assert {row.image_type for row in copied.values()} == {source.image_type}


def _lock_urls(session: Session, names: list[str]) -> None:
    for name in names:
        row = text("SELECT url FROM urls WHERE url = :url FOR UPDATE")
        assert session.execute(row, {"url": f"https://cdn.example/{name}"}).one()


@pytest.mark.services
def test_revalidations_lock_their_urls_in_key_order(pg_db: Database) -> None:
    # A plain UPDATE locked the rows in its scan's order: on a sequential scan, the
    # table's physical order (here b, c, a), while a store of new answers writes the
    # same URLs in key order; a re-run whose URLs' images changed meanwhile deadlocked.
    image = add_image(pg_db)
    for name in "bca":
        with pg_db.write() as session:
            _save_urls(image.image_key)(session, [name])

    def touch(names: list[str]) -> None:
        with pg_db.write() as session:
            # The scan a small table or a planner's estimate can pick anyway.
            session.execute(text("SET LOCAL enable_indexscan = off"))
            session.execute(text("SET LOCAL enable_bitmapscan = off"))
            image_repo.touch_urls(session, [f"https://cdn.example/{n}" for n in names], NOW)

    save = _in_transaction(pg_db, _save_urls(image.image_key))
    assert _opposite_orders(pg_db, _lock_urls, touch, save) == []
    with pg_db.read() as session:
        urls = image_repo.get_urls(session, [f"https://cdn.example/{n}" for n in "abc"])
    assert {row.checked_at for row in urls.values()} == {NOW}


def _wait_blocked_or_done(db: Database, backends: _Backends, writer: _Writer) -> None:
    """Wait until ``writer`` waits for a lock or has finished."""
    try:
        _wait_blocked(db, backends, writer)
    except AssertionError:
        writer.join(10)
        assert not writer.is_alive()


@pytest.mark.services
def test_revalidations_beside_copies_and_a_store_of_new_answers_do_not_deadlock(
    pg_db: Database,
) -> None:
    # match_known recorded the 304s (URL rows) before copying cached answers (image
    # rows), while store_new writes images, then URLs. Here the first holds URL u and
    # waits for image a; the second (u now serves image c) holds image c and waits for
    # u; once a is free, the first copies c: a deadlock on PostgreSQL, and a 503.
    source = add_image(pg_db)
    sha = source.content_sha256 or ""
    moved = "https://cdn.example/u.jpg"
    with pg_db.write() as session:
        image_repo.save_urls(
            session, [image_repo.UrlEntry(moved, source.image_key, None, None, 1)], NOW
        )

    def item(name: str, url: str, sha256: str) -> New:
        fetched = Fetched(url, url, b"x" * 10, Validators(None, None, 10), content_type=None)
        return New(fetched, f"v1:{name}", sha256)

    def copy_and_revalidate(_: list[str]) -> None:
        new = [item(n, f"https://cdn.example/{n}.jpg", sha) for n in "ac"]
        found = match_known(pg_db, LookupCache(), Telemetry(), new, [moved], FakeClock(NOW))
        assert set(found) == {"v1:a", "v1:c"}

    def store(_: list[str]) -> None:
        ready = [item("c", moved, "c" * 64)]
        answer = make_prediction([0.1, 0.8, 0.1], [1.0] + [0.0] * 11)
        store_new(
            pg_db,
            LookupCache(),
            FixedClassifier(),
            ready,
            [answer],
            [ColorAnswer("Black")],
            NOW,
        )

    backends = _Backends(pg_db)
    with pg_db.write() as holder:
        _save_images(holder, ["a"])  # held until this block ends
        first = _Writer(copy_and_revalidate, ["a", "c"])
        first.start()
        _wait_blocked(pg_db, backends, first)
        second = _Writer(store, ["c"])
        second.start()
        _wait_blocked_or_done(pg_db, backends, second)
    for writer in (first, second):
        writer.join(30)
        assert not writer.is_alive()
    assert [w.error for w in (first, second) if w.error is not None] == []
    with pg_db.read() as session:
        assert image_repo.get_urls(session, [moved])[moved].image_key == "v1:c"


@pytest.mark.services
def test_two_versions_of_one_dataset_created_at_once_take_the_next_numbers(
    pg_db: Database,
) -> None:
    # Both read the same last number; the second's insert waited for the first's
    # commit and failed on the duplicate ref (a traceback from `cartag dataset create`).
    _second_waits_for_first(
        pg_db,
        lambda session: dataset_repo.create_version(session, "cars", created_by="a", now=NOW),
        lambda session: dataset_repo.create_version(session, "cars", created_by="b", now=NOW),
    )
    with pg_db.read() as session:
        made = [dataset_repo.get_version(session, f"cars@{n}") for n in (1, 2)]
    assert [v.created_by for v in made] == ["a", "b"]


def _register(db: Database, *versions: str) -> None:
    with db.write() as session:
        for version in versions:
            model_repo.add_version(
                session,
                version=version,
                path=version,
                files_sha256="0" * 64,
                status="registered",
                card={},
                metrics={},
                dataset_ref=None,
                created_by="test",
                now=NOW,
            )


@pytest.mark.services
def test_a_new_alias_set_twice_at_once_keeps_both_deployments(pg_db: Database) -> None:
    # No row to lock yet: both inserted the alias, and the second failed on the duplicate
    # (a sweep naming its candidate while another did, two servers recording the model
    # they loaded).
    _register(pg_db, "m1", "m2")

    def point(version: str, by: str) -> Callable[[Session], object]:
        return lambda session: model_repo.point_alias(
            session, "candidate", version, by=by, reason="promote", now=NOW
        )

    _second_waits_for_first(pg_db, point("m1", "a"), point("m2", "b"))
    with pg_db.read() as session:
        assert model_repo.alias_version(session, "candidate") == "m2"
        history = model_repo.history(session, "candidate")
    assert [(d.version, d.ended_at is None) for d in history] == [("m1", False), ("m2", True)]


@pytest.mark.services
def test_the_first_model_loaded_by_two_servers_at_once_is_recorded(pg_db: Database) -> None:
    _register(pg_db, "m1")

    def record(by: str) -> Callable[[Session], object]:
        return lambda session: model_repo.record_last_loaded(session, "m1", by=by, now=NOW)

    _second_waits_for_first(pg_db, record("a"), record("b"))
    with pg_db.read() as session:
        assert model_repo.alias_version(session, model_repo.LAST_LOADED) == "m1"
