"""Re-classification after a promotion: images whose embeddings are not cached, and runs
overtaken by another deployment (only the production model's answers are saved)."""

from __future__ import annotations

import asyncio
import datetime as dt
import threading
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest
from PIL import Image
from sqlalchemy import select, text, update
from sqlalchemy.orm import Session

from cartag.clock import SystemClock
from cartag.imaging.keys import content_key, content_sha256
from cartag.jobs.reclassify import (
    ReclassifyReport,
    ReclassifySupersededError,
    claim_stale_request,
    reclassify,
    resume_stale,
)
from cartag.models.classifier import Classifier, Prediction
from cartag.net.fetch import Fetcher
from cartag.net.guard import StaticResolver
from cartag.settings import Settings
from cartag.store import advertisers as advertiser_repo
from cartag.store import images as image_repo
from cartag.store import model_versions as version_repo
from cartag.store import reclassify_requests as request_repo
from cartag.store.cache import InMemoryLookupCache
from cartag.store.db import Database
from cartag.store.tables import EmbeddingRow, ReclassifyRequestRow
from tests.support.db import fresh_database
from tests.support.factories import NOW, add_image
from tests.support.fakes import FixedClassifier, SizeRecorder
from tests.support.images import jpeg_bytes

HOSTS = StaticResolver({"cdn.example": ["93.184.216.34"]})
# Older than any lease a test sets.
LEASE_AGO = dt.timedelta(hours=2)


T = TypeVar("T")


def _fetching(
    settings: Settings,
    handler: Callable[[httpx.Request], Any],
    work: Callable[[Fetcher], Awaitable[T]],
) -> T:
    """Run ``work`` with a fetcher whose downloads ``handler`` answers."""

    async def go() -> T:
        transport = httpx.MockTransport(handler)
        async with Fetcher(settings, transport=transport, resolver=HOSTS) as fetcher:
            return await work(fetcher)

    return asyncio.run(go())


def _serving(served: dict[str, bytes]) -> Callable[[httpx.Request], httpx.Response]:
    """A download handler answering the URL paths of ``served`` (404 for others)."""

    def handler(request: httpx.Request) -> httpx.Response:
        body = served.get(request.url.path)
        if body is None:
            return httpx.Response(404)
        return httpx.Response(200, content=body, headers={"Content-Type": "image/jpeg"})

    return handler


def _run(
    db: Database,
    settings: Settings,
    classifier: Classifier,
    served: dict[str, bytes],
    advertiser_id: str | None = "A",
) -> ReclassifyReport:
    """One re-classification of ``advertiser_id``'s images (None: every opted-in
    advertiser's), the URLs answered from ``served``."""
    return _fetching(
        settings,
        _serving(served),
        lambda fetcher: reclassify(
            db, settings, classifier, fetcher, SystemClock(), advertiser_id=advertiser_id,
            lookup_cache=InMemoryLookupCache(),
        ),
    )  # fmt: skip


def _make_production(db: Database, version: str) -> None:
    """Point production at ``version`` (a registry row without files: nothing loads it)."""
    with db.write() as session:
        _point_production(session, version)


def _point_production(session: Session, version: str) -> None:
    if version_repo.find_version(session, version) is None:
        version_repo.add_version(
            session,
            version=version,
            path=version,
            files_sha256="0" * 64,
            status=version_repo.REGISTERED,
            card={},
            metrics={},
            dataset_ref=None,
            created_by="test",
            now=NOW,
        )
    version_repo.point_alias(
        session, version_repo.PRODUCTION, version, by="test", reason="promote", now=NOW
    )


def _opted_in(db: Database, data: bytes, url: str) -> str:
    """:func:`_stored`, of advertiser A who takes re-classifications after promotions."""
    key = _stored(db, data, url)
    with db.write() as session:
        advertiser_repo.set_advertiser(session, "A", reclassify_on_promote=True, now=NOW)
    return key


def _stored(db: Database, data: bytes, url: str) -> str:
    sha = content_sha256(data)
    image = add_image(
        db, image_key=content_key(sha), url=url, content_sha256=sha, model_version="old-1"
    )
    with db.write() as session:
        advertiser_repo.record_advertiser_images(session, "A", {image.image_key: url}, NOW)
    return image.image_key


def test_a_url_now_serving_other_bytes_keeps_its_answer_and_caches_nothing(
    db: Database, settings: Settings, classifier: Classifier
) -> None:
    same, before = jpeg_bytes(320, 240), jpeg_bytes(300, 200)
    kept = _stored(db, same, "https://cdn.example/same.jpg")
    replaced = _stored(db, before, "https://cdn.example/replaced.jpg")
    gone = _stored(db, jpeg_bytes(), "https://cdn.example/gone.jpg")
    with db.write() as session:
        advertiser_repo.set_advertiser(session, "A", reclassify_on_promote=True, now=NOW)
    # The dealer replaced the photo behind one URL; another URL now answers 404.
    served = {"/same.jpg": same, "/replaced.jpg": jpeg_bytes(color=(250, 250, 250))}
    _make_production(db, classifier.version)

    report = _run(db, settings, classifier, served)

    with db.read() as session:
        rows = image_repo.get_images(session, [kept, replaced, gone])
        cached = set(session.scalars(select(EmbeddingRow.content_sha256)))
    assert rows[kept].model_version == classifier.version
    assert rows[replaced].model_version == "old-1"  # not the new picture's answer
    assert rows[gone].model_version == "old-1"
    # The embedding cache holds the classified bytes' vectors, and nothing under the
    # replaced image's hash (a later classify of those bytes would take it).
    assert cached == {content_sha256(same)}
    assert (report.images, report.downloaded, report.failed) == (3, 1, 2)


def test_downloaded_images_are_decoded_at_the_models_draft_size(
    db: Database, settings: Settings
) -> None:
    photo = jpeg_bytes(1600, 1200)
    _opted_in(db, photo, "https://cdn.example/big.jpg")
    classifier = SizeRecorder(draft=150)
    _make_production(db, classifier.version)

    report = _run(db, settings, classifier, {"/big.jpg": photo})

    assert report.downloaded == 1
    # As a classify decodes it: libjpeg's 1/8 scale, 150 rows (not 1/4, 300 rows).
    assert classifier.sizes == [(200, 150)]


class _RolledBackWhilePredicting(FixedClassifier):
    """The fixed answer as version new-2; production moves to ``to`` while it predicts
    (a rollback committed while the run downloads and classifies)."""

    version = "new-2"

    def __init__(self, db: Database, to: str) -> None:
        self.db, self.to = db, to

    def predict(self, images: Sequence[Image.Image]) -> list[Prediction]:
        _make_production(self.db, self.to)
        return super().predict(images)


def test_a_run_whose_model_left_production_meanwhile_saves_nothing_and_says_why(
    db: Database, settings: Settings
) -> None:
    # Promote new-2, then roll back to old-1 while new-2's re-classification runs: the
    # slower run saved new-2's answers over the rollback's (old-1's), and they stayed.
    photo = jpeg_bytes(320, 240)
    key = _opted_in(db, photo, "https://cdn.example/a.jpg")
    _make_production(db, "old-1")
    _make_production(db, "new-2")

    with pytest.raises(ReclassifySupersededError) as raised:
        _run(db, settings, _RolledBackWhilePredicting(db, "old-1"), {"/a.jpg": photo})

    assert raised.value.code == "reclassify_superseded"
    assert "re-classification with new-2 stopped after 0 image(s)" in raised.value.message
    assert "production is now old-1" in raised.value.message
    assert "cartag models reclassify" in raised.value.message
    with db.read() as session:
        assert image_repo.get_images(session, [key])[key].model_version == "old-1"


def test_a_model_that_is_not_production_is_refused_before_any_download(
    db: Database, settings: Settings
) -> None:
    key = _opted_in(db, jpeg_bytes(), "https://cdn.example/a.jpg")
    _make_production(db, "old-1")
    classifier = SizeRecorder(draft=150)  # recorder-2: registered nowhere

    with pytest.raises(ReclassifySupersededError, match="production is now old-1"):
        _run(db, settings, classifier, {"/a.jpg": jpeg_bytes()})

    assert classifier.sizes == []
    with db.read() as session:
        assert image_repo.get_images(session, [key])[key].model_version == "old-1"


class _Run(threading.Thread):
    """One re-classification in a thread; keeps its report or error."""

    def __init__(self, db: Database, settings: Settings, served: dict[str, bytes]) -> None:
        super().__init__(daemon=True)
        self.args = (db, settings, served)
        self.result: ReclassifyReport | None = None
        self.error: BaseException | None = None

    def run(self) -> None:
        db, settings, served = self.args
        try:
            self.result = _run(db, settings, _NewModel(), served)
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            self.error = exc


class _NewModel(FixedClassifier):
    version = "new-2"


@pytest.mark.services
def test_a_save_waits_for_a_rollback_in_progress_and_then_saves_nothing(
    tmp_path: Path, settings: Settings
) -> None:
    # PostgreSQL interleaves transactions: a check of the alias before the write, or in
    # another transaction, let a rollback commit in between. The write reads the alias
    # share-locked in its own transaction, so it waits for the rollback and sees it.
    with fresh_database("postgresql", tmp_path) as db:
        photo = jpeg_bytes(320, 240)
        key = _opted_in(db, photo, "https://cdn.example/a.jpg")
        _make_production(db, "old-1")
        _make_production(db, "new-2")
        run = _Run(db, settings, {"/a.jpg": photo})
        with db.write() as rollback:
            _point_production(rollback, "old-1")  # locks the alias until it commits
            run.start()
            deadline = time.monotonic() + 60
            while run.is_alive() and time.monotonic() < deadline:
                with db.read() as session:
                    waiting = session.scalar(
                        text(
                            "SELECT count(*) FROM pg_stat_activity WHERE datname = "
                            "current_database() AND wait_event_type = 'Lock'"
                        )
                    )
                if waiting:
                    break
                time.sleep(0.02)
            assert run.is_alive(), f"the save did not wait for the rollback: {run.error!r}"
        run.join(60)
        assert isinstance(run.error, ReclassifySupersededError), run.error
        assert "production is now old-1" in run.error.message
        with db.read() as session:
            assert image_repo.get_images(session, [key])[key].model_version == "old-1"


def _requests(db: Database) -> list[tuple[str, str | None, str | None, str | None]]:
    """(version, advertiser, outcome, error) of every request, oldest first."""
    with db.read() as session:
        rows = session.scalars(select(ReclassifyRequestRow).order_by(ReclassifyRequestRow.id))
        return [(r.version, r.advertiser_id, r.outcome, r.error) for r in rows]


def test_a_run_cut_off_part_way_stays_open_until_a_run_of_its_model_finishes(
    db: Database, settings: Settings
) -> None:
    # The server stopped while an API-started re-classification downloaded: nothing
    # recorded it, and the images it had not reached kept the old answers silently.
    photo = jpeg_bytes(320, 240)
    key = _opted_in(db, photo, "https://cdn.example/a.jpg")
    _make_production(db, "new-2")
    asked = threading.Event()

    async def hang(request: httpx.Request) -> httpx.Response:
        asked.set()
        await asyncio.Event().wait()  # the download never ends: the server stops first
        raise AssertionError("unreachable")

    async def cut_off() -> None:
        transport = httpx.MockTransport(hang)
        async with Fetcher(settings, transport=transport, resolver=HOSTS) as fetcher:
            run = asyncio.create_task(
                reclassify(
                    db,
                    settings,
                    _NewModel(),
                    fetcher,
                    SystemClock(),
                    requested_by="ops",
                    lookup_cache=InMemoryLookupCache(),
                )
            )
            while not asked.is_set():
                await asyncio.sleep(0.01)
            run.cancel()  # as the app's lifespan cancels its background tasks
            with pytest.raises(asyncio.CancelledError):
                await run

    asyncio.run(cut_off())

    with db.read() as session:
        [pending] = request_repo.incomplete(session)
        assert image_repo.get_images(session, [key])[key].model_version == "old-1"
    assert (pending.version, pending.advertiser_id, pending.requested_by) == ("new-2", None, "ops")
    assert pending.progress_at is None and pending.finished_at is None

    # `cartag models reclassify --advertiser A` would not cover a request for every
    # advertiser; a run for every opted-in advertiser does, and closes it.
    _run(db, settings, _NewModel(), {"/a.jpg": photo})  # advertiser A only
    with db.read() as session:
        assert [r.id for r in request_repo.incomplete(session)] == [pending.id]
    report = _run(db, settings, _NewModel(), {"/a.jpg": photo}, advertiser_id=None)
    assert report.current == 1  # done by the run for A: skipped
    with db.read() as session:
        assert request_repo.incomplete(session) == []
        assert image_repo.get_images(session, [key])[key].model_version == "new-2"
    assert _requests(db) == [
        ("new-2", None, "done", None),
        ("new-2", "A", "done", None),
        ("new-2", None, "done", None),
    ]


class _OutOfMemory(FixedClassifier):
    version = "new-2"

    def predict(self, images: Sequence[Image.Image]) -> list[Prediction]:
        raise MemoryError("cannot allocate the batch")


def test_a_failed_run_stays_open_with_its_error_and_a_superseded_one_is_closed(
    db: Database, settings: Settings
) -> None:
    photo = jpeg_bytes(320, 240)
    _opted_in(db, photo, "https://cdn.example/a.jpg")
    _make_production(db, "old-1")
    _make_production(db, "new-2")

    with pytest.raises(MemoryError):
        _run(db, settings, _OutOfMemory(), {"/a.jpg": photo})
    with db.read() as session:
        [failed] = request_repo.incomplete(session)
    assert failed.error == "MemoryError('cannot allocate the batch')"

    # Rolled back while the next run predicts: it stops, and closes its own request as
    # superseded; the failed one of new-2 is no longer reported either (not production).
    with pytest.raises(ReclassifySupersededError):
        _run(db, settings, _RolledBackWhilePredicting(db, "old-1"), {"/a.jpg": photo})
    with db.read() as session:
        assert request_repo.incomplete(session) == []
    assert [(v, outcome) for v, _, outcome, _ in _requests(db)] == [
        ("new-2", None),
        ("new-2", "superseded"),
    ]
    # A request with old-1 (production now) closes new-2's open one as superseded.
    with db.write() as session:
        request_repo.open_request(session, "old-1", None, by="ops", now=NOW)
    assert [(v, outcome) for v, _, outcome, _ in _requests(db)] == [
        ("new-2", "superseded"),
        ("new-2", "superseded"),
        ("old-1", None),
    ]


def _resume(
    db: Database, settings: Settings, classifier: Classifier, served: dict[str, bytes]
) -> ReclassifyReport | None:
    """One round of a server's take-over of stopped re-classifications."""
    return _fetching(
        settings,
        _serving(served),
        lambda fetcher: resume_stale(
            db, settings, classifier, fetcher, SystemClock(), lookup_cache=InMemoryLookupCache()
        ),
    )


def test_a_run_that_stopped_is_taken_over_by_one_server_of_production_and_finished(
    db: Database, settings: Settings
) -> None:
    # A request whose run stopped (its server was stopped part-way) waited for someone to
    # read /healthz; a server serving production's model now finishes it by itself.
    photo = jpeg_bytes(320, 240)
    key = _opted_in(db, photo, "https://cdn.example/a.jpg")
    _make_production(db, "old-1")
    _make_production(db, "new-2")
    with db.write() as session:
        stopped = request_repo.open_request(session, "new-2", None, by="api", now=NOW).id
    served = {"/a.jpg": photo}

    # A server of another model leaves it alone; so does one while the run is alive.
    assert _resume(db, settings, FixedClassifier(), served) is None
    with db.write() as session:
        request_repo.beat(session, stopped, SystemClock().now())
    assert _resume(db, settings, _NewModel(), served) is None
    with db.write() as session:
        session.execute(
            update(ReclassifyRequestRow).values(progress_at=SystemClock().now() - LEASE_AGO)
        )

    report = _resume(db, settings, _NewModel(), served)
    assert report is not None and report.request_id == stopped and report.saved == 1
    with db.read() as session:
        assert request_repo.incomplete(session) == []
        assert image_repo.get_images(session, [key])[key].model_version == "new-2"
    assert _requests(db) == [("new-2", None, "done", None)]
    assert _resume(db, settings, _NewModel(), served) is None


def test_of_two_servers_finding_a_stopped_run_one_takes_it_over(
    db: Database, settings: Settings
) -> None:
    _make_production(db, "new-2")
    with db.write() as session:
        stopped = request_repo.open_request(session, "new-2", None, by="api", now=NOW).id
    clock = SystemClock()
    first = claim_stale_request(db, "new-2", clock, settings.job_lease_s)
    second = claim_stale_request(db, "new-2", clock, settings.job_lease_s)
    assert (first, second) == ((stopped, None), None)


def test_a_stopped_run_for_an_advertiser_that_left_is_withdrawn(
    db: Database, settings: Settings
) -> None:
    _make_production(db, "new-2")
    with db.write() as session:
        advertiser_repo.set_advertiser(session, "B", reclassify_on_promote=True, now=NOW)
        request_repo.open_request(session, "new-2", "B", by="api", now=NOW)
        advertiser_repo.set_advertiser(session, "B", reclassify_on_promote=False, now=NOW)
    assert _resume(db, settings, _NewModel(), {}) is None
    assert _requests(db) == [("new-2", "B", "withdrawn", None)]


@pytest.mark.slow
def test_a_run_marks_itself_alive_while_a_chunk_takes_longer_than_the_lease(
    db: Database, settings: Settings
) -> None:
    # A chunk's downloads may outlast the lease: without a beat, other servers would
    # take the request over and run it twice.
    settings = settings.model_copy(update={"job_lease_s": 4.0})
    photo = jpeg_bytes(320, 240)
    _opted_in(db, photo, "https://cdn.example/a.jpg")
    _make_production(db, "new-2")
    beats: list[object] = []

    async def slow(request: httpx.Request) -> httpx.Response:
        for _ in range(5):
            await asyncio.sleep(0.5)
            with db.read() as session:
                beats.append(session.scalar(select(ReclassifyRequestRow.progress_at)))
        return httpx.Response(200, content=photo)

    report = _fetching(
        settings,
        slow,
        lambda fetcher: reclassify(
            db, settings, _NewModel(), fetcher, SystemClock(), lookup_cache=InMemoryLookupCache()
        ),
    )
    assert report.saved == 1
    assert beats[0] is None and beats[-1] is not None  # beat before the chunk was saved
    assert claim_stale_request(db, "new-2", SystemClock(), settings.job_lease_s) is None
