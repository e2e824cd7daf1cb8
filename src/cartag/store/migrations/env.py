"""Alembic environment: runs on the connection cartag hands over in ``config.attributes``."""

from __future__ import annotations

from alembic import context

from cartag.store.tables import Base

config = context.config
connection = config.attributes.get("connection")
if connection is None:
    raise RuntimeError("run migrations through `cartag db upgrade` (cartag.store.db.upgrade)")

context.configure(
    connection=connection,
    target_metadata=Base.metadata,
    render_as_batch=connection.dialect.name == "sqlite",
    compare_type=True,
)
with context.begin_transaction():
    context.run_migrations()
