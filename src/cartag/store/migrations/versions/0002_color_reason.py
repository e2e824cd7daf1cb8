"""images.color_reason: why a color is null when the color provider failed

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-27 00:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Nullable, no default: existing rows have no provider failure to record.
    with op.batch_alter_table("images", schema=None) as batch_op:
        batch_op.add_column(sa.Column("color_reason", sa.String(length=100), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("images", schema=None) as batch_op:
        batch_op.drop_column("color_reason")
