from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from cartag.store.db import Database, current_revision, downgrade, head_revision, upgrade
from cartag.store.tables import Base


def test_migrations_match_the_tables(db: Database) -> None:
    with db.engine.connect() as conn:
        context = MigrationContext.configure(conn, opts={"compare_type": True})
        assert compare_metadata(context, Base.metadata) == []


def test_upgrade_is_idempotent(db: Database) -> None:
    before = current_revision(db)
    upgrade(db)
    assert current_revision(db) == before == head_revision()


def test_downgrade_to_base_and_back(db: Database) -> None:
    downgrade(db, "base")
    assert current_revision(db) is None
    upgrade(db)
    assert current_revision(db) == head_revision()
