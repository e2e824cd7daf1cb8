"""re-classification requests: a run cut off part-way is recorded, not lost

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-08 00:00:00

``reclassify_requests``: one row per re-classification asked for (after an API promotion
or rollback, ``POST /v1/models/reclassify``, ``cartag models promote|rollback|reclassify``),
written before the run starts and closed when a run of its model finishes it (``done``) or
production moves on (``superseded``). A row left open — the server stopped mid-way — is
what ``/healthz`` and ``cartag models list`` report as an incomplete re-classification.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "reclassify_requests",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("version", sa.String(length=80), nullable=False),
        sa.Column("advertiser_id", sa.String(length=128), nullable=True),
        sa.Column("requested_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("requested_by", sa.String(length=128), nullable=False),
        sa.Column("progress_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("outcome", sa.String(length=16), nullable=True),
        sa.ForeignKeyConstraint(
            ["version"],
            ["model_versions.version"],
            name=op.f("fk_reclassify_requests_version_model_versions"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_reclassify_requests")),
    )
    op.create_index(op.f("ix_reclassify_requests_version"), "reclassify_requests", ["version"])
    op.create_index(
        op.f("ix_reclassify_requests_finished_at"), "reclassify_requests", ["finished_at"]
    )


def downgrade() -> None:
    op.drop_index(op.f("ix_reclassify_requests_finished_at"), table_name="reclassify_requests")
    op.drop_index(op.f("ix_reclassify_requests_version"), table_name="reclassify_requests")
    op.drop_table("reclassify_requests")
