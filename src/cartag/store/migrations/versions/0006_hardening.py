"""hardening: browser sessions, job owners, deployment secrets; stored URLs lose passwords

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-03 09:00:00

Data: URL passwords already stored are redacted (``user:***@``) in images, finished job
items and their results, dataset item provenance; URL rows with a password are dropped
(they only remember validators; the next classify downloads the image again); the
callback URL of a job whose callback was sent loses its password and query tokens.
Pending job items and callbacks keep theirs until they are used. Not reversible.
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

_TS = sa.DateTime(timezone=True)
# A copy of cartag.redaction as of this revision: a migration must not change when
# the application's code does.
_SENSITIVE_NAME = re.compile(r"token|sig|secret|pass|pwd|key|auth|credential|session", re.I)


def _strip_password(url: str) -> str:
    try:
        parts = urlsplit(url)
    except ValueError:
        return url
    userinfo, at, hostport = parts.netloc.rpartition("@")
    if not at or ":" not in userinfo:
        return url
    return urlunsplit(parts._replace(netloc=f"{userinfo.split(':', 1)[0]}:***@{hostport}"))


def _redact_url(url: str) -> str:
    url = _strip_password(url)
    try:
        parts = urlsplit(url)
    except ValueError:
        return url
    fields = []
    for field in parts.query.split("&") if parts.query else []:
        name, eq, value = field.partition("=")
        fields.append(f"{name}=***" if eq and value and _SENSITIVE_NAME.search(name) else field)
    return urlunsplit(parts._replace(query="&".join(fields))) if fields else url


def upgrade() -> None:
    op.create_table(
        "browser_sessions",
        sa.Column("token_hash", sa.String(length=64), nullable=False),
        sa.Column("key_id", sa.Integer(), nullable=False),
        sa.Column("created_at", _TS, nullable=False),
        sa.Column("expires_at", _TS, nullable=False),
        sa.Column("revoked_at", _TS, nullable=True),
        sa.ForeignKeyConstraint(
            ["key_id"],
            ["api_keys.id"],
            name=op.f("fk_browser_sessions_key_id_api_keys"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("token_hash", name=op.f("pk_browser_sessions")),
    )
    op.create_index(op.f("ix_browser_sessions_key_id"), "browser_sessions", ["key_id"])
    op.create_index(op.f("ix_browser_sessions_expires_at"), "browser_sessions", ["expires_at"])
    op.create_table(
        "deployment_secrets",
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("value", sa.String(length=128), nullable=False),
        sa.Column("created_at", _TS, nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_deployment_secrets")),
    )
    # Nullable: jobs made before owners were recorded have none (admins only).
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.add_column(sa.Column("owner_key_id", sa.Integer(), nullable=True))
        batch_op.create_index(batch_op.f("ix_jobs_owner_key_id"), ["owner_key_id"])
    _redact_stored_urls(op.get_bind())


def _redact_stored_urls(conn: sa.Connection) -> None:
    images = sa.table("images", sa.column("image_key", sa.String), sa.column("url", sa.Text))
    # Each query is read in full (.all()) before its rows are updated.
    found = sa.select(images.c.image_key, images.c.url).where(images.c.url.like("%@%"))
    for key, url in conn.execute(found).all():
        if (clean := _strip_password(url)) != url:
            conn.execute(images.update().where(images.c.image_key == key).values(url=clean))

    urls = sa.table("urls", sa.column("url", sa.String))
    for (url,) in conn.execute(sa.select(urls.c.url).where(urls.c.url.like("%@%"))).all():
        if _strip_password(url) != url:
            conn.execute(urls.delete().where(urls.c.url == url))

    items = sa.table(
        "job_items",
        sa.column("job_id", sa.String),
        sa.column("idx", sa.Integer),
        sa.column("url", sa.Text),
        sa.column("result", sa.JSON(none_as_null=True)),
    )
    done = sa.select(items.c.job_id, items.c.idx, items.c.url, items.c.result).where(
        items.c.url.like("%@%"), items.c.result.is_not(None)
    )
    for job_id, idx, url, result in conn.execute(done).all():
        if result is None:  # a JSON null: still pending
            continue
        values: dict[str, Any] = {"url": _strip_password(url)}
        if isinstance(result, dict) and isinstance(result.get("url"), str):
            values["result"] = {**result, "url": _strip_password(result["url"])}
        conn.execute(
            items.update().where(items.c.job_id == job_id, items.c.idx == idx).values(**values)
        )

    jobs = sa.table(
        "jobs",
        sa.column("id", sa.String),
        sa.column("callback_url", sa.Text),
        sa.column("callback_status", sa.String),
    )
    sent = sa.select(jobs.c.id, jobs.c.callback_url).where(
        jobs.c.callback_url.is_not(None), jobs.c.callback_status.is_not(None)
    )
    for job_id, url in conn.execute(sent).all():
        if (clean := _redact_url(url)) != url:
            conn.execute(jobs.update().where(jobs.c.id == job_id).values(callback_url=clean))

    dataset_items = sa.table(
        "dataset_items", sa.column("id", sa.Integer), sa.column("provenance", sa.JSON)
    )
    with_at = sa.cast(dataset_items.c.provenance, sa.Text).like("%@%")
    for item_id, provenance in conn.execute(
        sa.select(dataset_items.c.id, dataset_items.c.provenance).where(with_at)
    ).all():
        url = provenance.get("url") if isinstance(provenance, dict) else None
        if isinstance(url, str) and (clean := _strip_password(url)) != url:
            conn.execute(
                dataset_items.update()
                .where(dataset_items.c.id == item_id)
                .values(provenance={**provenance, "url": clean})
            )


def downgrade() -> None:
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_jobs_owner_key_id"))
        batch_op.drop_column("owner_key_id")
    op.drop_table("deployment_secrets")
    op.drop_index(op.f("ix_browser_sessions_expires_at"), table_name="browser_sessions")
    op.drop_index(op.f("ix_browser_sessions_key_id"), table_name="browser_sessions")
    op.drop_table("browser_sessions")
