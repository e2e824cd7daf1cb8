"""operations: classify_daily rollup of answered images per day, advertiser and model

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-02 01:10:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "classify_daily",
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("advertiser_id", sa.String(length=128), nullable=False),
        sa.Column("model_version", sa.String(length=80), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("image_type", sa.String(length=16), nullable=False),
        sa.Column("color", sa.String(length=16), nullable=False),
        sa.Column("source", sa.String(length=16), nullable=False),
        sa.Column("count", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint(
            "day",
            "advertiser_id",
            "model_version",
            "status",
            "image_type",
            "color",
            "source",
            name=op.f("pk_classify_daily"),
        ),
    )
    op.create_index(op.f("ix_classify_daily_advertiser_id"), "classify_daily", ["advertiser_id"])


def downgrade() -> None:
    op.drop_index(op.f("ix_classify_daily_advertiser_id"), table_name="classify_daily")
    op.drop_table("classify_daily")
