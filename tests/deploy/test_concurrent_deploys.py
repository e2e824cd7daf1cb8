"""Registrations, promotions and rollbacks at the same moment: each sees the other's result.

SQLite runs one writer at a time (``BEGIN IMMEDIATE``), so only PostgreSQL can interleave
the transactions. A promotion's gates and a rollback's target were read before the alias
was locked: a promotion committed meanwhile was compared against the production it had
replaced, or undone together with the version the rollback meant to undo. The
interleaving is made deterministic as in tests/store/test_concurrent_writes.py: the other
writer is a transaction held open until the contender waits for a lock.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from sqlalchemy import Connection, event, text

from cartag.clock import FakeClock
from cartag.deploy.loadcheck import files_digest
from cartag.deploy.registry import record_metrics, register_model
from cartag.errors import ConflictError
from cartag.gates import PromotionGatedError
from cartag.models.classifier import Classifier
from cartag.settings import Settings
from cartag.store import model_versions as repo
from cartag.store.db import Database
from cartag.store.tables import DeploymentRow
from tests.support.db import fresh_database
from tests.support.models import type_metrics
from tests.support.registry import Scene, make_scene, model_dir, promote, register, rollback

GOOD = {"Dealer": 0.95, "Stock": 0.9, "Placeholder": 0.99}


@pytest.fixture
def pg_scene(
    tmp_path: Path, settings: Settings, classifier: Classifier, clock: FakeClock
) -> Iterator[Scene]:
    with fresh_database("postgresql", tmp_path) as database:
        yield make_scene(database, settings, classifier, tmp_path / "sources", clock)


class _Contender(threading.Thread):
    """Runs a registration, promotion or rollback in a thread; keeps its answer or error."""

    def __init__(self, db: Database, call: Callable[[], object]) -> None:
        super().__init__(daemon=True)
        self.call = call
        self.result: object = None
        self.error: BaseException | None = None
        self.pid: int | None = None
        event.listen(db.engine, "begin", self._begin)

    def _begin(self, conn: Connection) -> None:
        if threading.current_thread() is self:
            dbapi = conn.connection.dbapi_connection
            assert dbapi is not None
            self.pid = dbapi.info.backend_pid  # type: ignore[attr-defined]

    def run(self) -> None:
        try:
            self.result = self.call()
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            self.error = exc

    def wait_blocked(self, db: Database) -> None:
        """Wait until this contender's transaction waits for a lock."""
        deadline = time.monotonic() + 60  # a promotion loads the model first
        while time.monotonic() < deadline and self.is_alive():
            if self.pid is not None:
                with db.read() as session:
                    waiting = session.scalar(
                        text("SELECT count(*) FROM pg_locks WHERE pid = :pid AND NOT granted"),
                        {"pid": self.pid},
                    )
                if waiting:
                    return
            time.sleep(0.02)
        raise AssertionError(f"the contender never waited for a lock ({self.error!r})")


def _while_promoting(scene: Scene, version: str, contender: _Contender) -> None:
    """Promote ``version`` in a transaction that commits once ``contender`` waits on it."""
    with scene.db.write() as holder:
        repo.lock_alias(holder, repo.PRODUCTION)
        repo.point_alias(
            holder, repo.PRODUCTION, version, by="a", reason="promote", now=scene.clock.now()
        )
        contender.start()
        contender.wait_blocked(scene.db)
    contender.join(60)
    assert not contender.is_alive()


def _production(scene: Scene) -> list[tuple[str, str, bool]]:
    with scene.db.read() as session:
        return [
            (d.version, d.reason, d.ended_at is None) for d in repo.history(session, "production")
        ]


@pytest.mark.services
def test_a_rollback_during_a_promotion_undoes_only_that_promotion(pg_scene: Scene) -> None:
    scene = pg_scene
    for name in ("b", "c"):
        register(scene, name)
    scene.clock.advance(1)
    promote(scene, "b")
    scene.clock.advance(1)
    back = _Contender(scene.db, lambda: rollback(scene))
    _while_promoting(scene, "c", back)
    # The rollback was asked while b served and ran after c's promotion: it returns to
    # b, as if they had come one after the other; it used to go back to the initial model.
    assert back.error is None and isinstance(back.result, DeploymentRow)
    assert back.result.version == "b"
    assert _production(scene) == [
        (scene.initial, "initial", False),
        ("b", "promote", False),
        ("c", "promote", False),
        ("b", "rollback", True),
    ]


@pytest.mark.services
def test_a_promotion_is_gated_against_the_production_promoted_meanwhile(pg_scene: Scene) -> None:
    scene = pg_scene
    record_metrics(scene.db, scene.initial, type_metrics({**GOOD, "Stock": 0.80}))
    register(scene, "best", metrics=type_metrics(GOOD))
    register(scene, "middle", metrics=type_metrics({**GOOD, "Stock": 0.85}))
    # "middle" passes against the initial model (Stock 0.80 -> 0.85), not against "best"
    # (0.90 -> 0.85), which is promoted while "middle" is being load-checked.
    second = _Contender(scene.db, lambda: promote(scene, "middle"))
    _while_promoting(scene, "best", second)
    assert isinstance(second.error, PromotionGatedError), second.error
    assert "Stock" in second.error.failures[0]
    assert _production(scene)[-1] == ("best", "promote", True)


@pytest.mark.services
def test_the_same_version_promoted_twice_at_once_is_a_conflict(pg_scene: Scene) -> None:
    scene = pg_scene
    register(scene, "b")
    second = _Contender(scene.db, lambda: promote(scene, "b"))
    _while_promoting(scene, "b", second)
    assert second.error is not None and "already serves b" in str(second.error)
    assert _production(scene) == [(scene.initial, "initial", False), ("b", "promote", True)]


def _register_folder(scene: Scene, folder: Path) -> str:
    row = register_model(
        scene.db, scene.settings, folder, created_by="t", clock=scene.clock, reuse=scene.classifier
    )
    return row.version


def test_one_version_registered_with_two_sets_of_files_at_once(
    db: Database, settings: Settings, classifier: Classifier, clock: FakeClock, tmp_path: Path
) -> None:
    # Both passed the "already registered?" check before either had written its row:
    # the second replaced the first's folder under it and overwrote its row, and both
    # were told they had registered the version.
    scene = make_scene(db, settings, classifier, tmp_path / "sources", clock)
    folders = [model_dir(scene, "twin", temperature_scale=scale) for scale in (1.1, 1.3)]
    start = threading.Barrier(2)
    outcomes: list[object] = []

    def run(folder: Path) -> None:
        start.wait()
        try:
            outcomes.append(files_digest(folder) if _register_folder(scene, folder) else None)
        except ConflictError as exc:
            outcomes.append(exc)

    threads = [threading.Thread(target=run, args=(folder,)) for folder in folders]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    [conflict] = [o for o in outcomes if isinstance(o, ConflictError)]
    assert "registered already with different files" in str(conflict)
    [winner] = [o for o in outcomes if isinstance(o, str)]
    with db.read() as session:
        row = repo.get_version(session, "twin")
    assert row.status == "registered" and row.files_sha256 == winner
    assert files_digest(settings.data_dir / "models" / "twin") == winner


@pytest.mark.services
def test_a_version_registered_meanwhile_from_another_host_is_a_conflict(pg_scene: Scene) -> None:
    # A process on another host (same database, another data dir) wrote the row while
    # this one loaded the model: the duplicate key used to escape as an IntegrityError
    # (a traceback from `cartag models register`).
    scene = pg_scene
    folder = model_dir(scene, "twin")
    other = _Contender(scene.db, lambda: _register_folder(scene, folder))
    with scene.db.write() as holder:
        repo.add_version(
            holder,
            version="twin",
            path="twin",
            files_sha256="0" * 64,
            status="registered",
            card={},
            metrics={},
            dataset_ref=None,
            created_by="elsewhere",
            now=scene.clock.now(),
        )
        other.start()
        other.wait_blocked(scene.db)
    other.join(60)
    assert isinstance(other.error, ConflictError), other.error
    with scene.db.read() as session:
        assert repo.get_version(session, "twin").created_by == "elsewhere"
