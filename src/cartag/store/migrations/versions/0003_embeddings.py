"""embeddings: backbone embeddings cached by (content hash, backbone id)

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-26 01:20:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "embeddings",
        sa.Column("content_sha256", sa.String(length=64), nullable=False),
        sa.Column("backbone_id", sa.String(length=80), nullable=False),
        sa.Column("dim", sa.Integer(), nullable=False),
        sa.Column("vector", sa.LargeBinary(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("content_sha256", "backbone_id", name=op.f("pk_embeddings")),
    )


def downgrade() -> None:
    op.drop_table("embeddings")
