from __future__ import annotations

import datetime as dt

import sqlalchemy as sa
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


def test_0006_redacts_the_url_passwords_already_stored(db: Database) -> None:
    downgrade(db, "0005")
    now = dt.datetime(2026, 12, 1, tzinfo=dt.UTC)
    secret_url = "https://alice:pa55@cdn.example/a.jpg?w=1"
    hook = "https://hooks.example/cb?token=t0k&id=7"
    images = sa.table(
        "images",
        sa.column("image_key"),
        sa.column("url"),
        sa.column("created_at"),
        sa.column("updated_at"),
    )
    urls = sa.table("urls", sa.column("url"), sa.column("image_key"), sa.column("checked_at"))
    jobs = sa.table(
        "jobs",
        *(sa.column(c) for c in ("id", "advertiser_id", "status", "total", "done", "created_at")),
        sa.column("callback_url"),
        sa.column("callback_status"),
    )
    items = sa.table(
        "job_items",
        sa.column("job_id"),
        sa.column("idx"),
        sa.column("url"),
        sa.column("result", sa.JSON(none_as_null=True)),
    )
    job = {"advertiser_id": "a", "status": "done", "total": 1, "done": 1, "created_at": now}
    with db.engine.begin() as conn:
        conn.execute(
            images.insert().values(image_key="k", url=secret_url, created_at=now, updated_at=now)
        )
        conn.execute(urls.insert().values(url=secret_url, image_key="k", checked_at=now))
        conn.execute(
            urls.insert().values(url="https://cdn.example/b.jpg", image_key="k", checked_at=now)
        )
        conn.execute(
            jobs.insert().values(
                id="sent", callback_url=hook, callback_status="delivered:200", **job
            )
        )
        conn.execute(
            jobs.insert().values(id="pending", callback_url=hook, callback_status=None, **job)
        )
        conn.execute(
            items.insert().values(job_id="sent", idx=0, url=secret_url, result={"url": secret_url})
        )
        conn.execute(items.insert().values(job_id="pending", idx=0, url=secret_url, result=None))
    upgrade(db)
    redacted = "https://alice:***@cdn.example/a.jpg?w=1"
    with db.engine.connect() as conn:
        assert conn.execute(sa.select(images.c.url)).scalar_one() == redacted
        assert conn.execute(sa.select(urls.c.url)).scalars().all() == ["https://cdn.example/b.jpg"]
        callbacks = dict(conn.execute(sa.select(jobs.c.id, jobs.c.callback_url)).all())
        assert callbacks == {"sent": "https://hooks.example/cb?token=***&id=7", "pending": hook}
        stored = {r.job_id: (r.url, r.result) for r in conn.execute(sa.select(items))}
        # A pending item keeps its password until it is downloaded.
        assert stored == {"sent": (redacted, {"url": redacted}), "pending": (secret_url, None)}


def test_0007_keeps_keys_unscoped_and_old_audit_rows_without_a_key(db: Database) -> None:
    downgrade(db, "0006")
    now = dt.datetime(2026, 12, 1, tzinfo=dt.UTC)
    keys = sa.table(
        "api_keys",
        *(sa.column(c) for c in ("id", "name", "prefix", "key_hash", "roles", "created_at")),
    )
    images = sa.table(
        "images",
        sa.column("image_key"),
        sa.column("url"),
        sa.column("created_at"),
        sa.column("updated_at"),
    )
    audit = sa.table(
        "fix_audit",
        *(sa.column(c) for c in ("image_key", "advertiser_id", "scope", "user", "created_at")),
        sa.column("changes", sa.JSON),
    )
    with db.engine.begin() as conn:
        conn.execute(
            keys.insert().values(
                id=1,
                name="ops",
                prefix="0a1b2c3d",
                key_hash="0" * 64,
                roles="fixer",
                created_at=now,
            )
        )
        conn.execute(images.insert().values(image_key="k", url="u", created_at=now, updated_at=now))
        conn.execute(
            audit.insert().values(
                image_key="k",
                advertiser_id="a",
                scope="global",
                user="typed by hand",
                created_at=now,
                changes={"color": {"from": None, "to": "Red"}},
            )
        )
    upgrade(db)
    with db.engine.connect() as conn:
        row = conn.execute(sa.text('SELECT "user", key_id, on_behalf_of FROM fix_audit')).one()
        scopes = conn.execute(sa.text("SELECT COUNT(*) FROM api_key_advertisers")).scalar_one()
    assert tuple(row) == ("typed by hand", None, None) and scopes == 0


def test_0008_gives_old_rollup_rows_zero_drift_sums_and_old_images_no_novelty(
    db: Database,
) -> None:
    downgrade(db, "0007")
    now = dt.datetime(2026, 12, 1, tzinfo=dt.UTC)
    images = sa.table(
        "images",
        sa.column("image_key"),
        sa.column("url"),
        sa.column("created_at"),
        sa.column("updated_at"),
    )
    daily = sa.table(
        "classify_daily",
        *(
            sa.column(c)
            for c in (
                "day",
                "advertiser_id",
                "model_version",
                "status",
                "image_type",
                "color",
                "source",
                "count",
            )
        ),
    )
    with db.engine.begin() as conn:
        conn.execute(images.insert().values(image_key="k", url="u", created_at=now, updated_at=now))
        conn.execute(
            daily.insert().values(
                day=now.date(),
                advertiser_id="a",
                model_version="m1",
                status="cached",
                image_type="Dealer",
                color="Red",
                source="cache",
                count=7,
            )
        )
    upgrade(db)
    with db.engine.connect() as conn:
        novelty = conn.execute(sa.text("SELECT novelty FROM images")).scalar_one()
        sums = conn.execute(
            sa.text(
                "SELECT count, confidence_n, confidence_sum, novelty_n, novelty_sum, far_n "
                "FROM classify_daily"
            )
        ).one()
    assert novelty is None
    assert tuple(sums) == (7, 0, 0, 0, 0, 0)


def test_0009_leaves_every_advertiser_on_the_deployments_adaptation_default(db: Database) -> None:
    downgrade(db, "0008")
    now = dt.datetime(2026, 12, 1, tzinfo=dt.UTC)
    settings = sa.table(
        "advertiser_settings",
        sa.column("advertiser_id"),
        sa.column("reclassify_on_promote"),
        sa.column("updated_at"),
    )
    with db.engine.begin() as conn:
        conn.execute(
            settings.insert().values(
                advertiser_id="dealer-42", reclassify_on_promote=True, updated_at=now
            )
        )
    upgrade(db)
    with db.engine.connect() as conn:
        row = conn.execute(
            sa.text("SELECT reclassify_on_promote, adapt_answers FROM advertiser_settings")
        ).one()
    assert (bool(row[0]), row[1]) == (True, None)
