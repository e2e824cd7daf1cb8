"""advertiser adaptation: a per-advertiser switch for answers adapted to its fixes

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-07 02:00:00

``advertiser_settings`` gains ``adapt_answers``: True/False turns advertiser-aware answers
(``source: "advertiser_model"``) on or off for that advertiser; null (every existing row)
follows ``CARTAG_ADVERTISER_ADAPTATION``.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("advertiser_settings", schema=None) as batch_op:
        batch_op.add_column(sa.Column("adapt_answers", sa.Boolean(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("advertiser_settings", schema=None) as batch_op:
        batch_op.drop_column("adapt_answers")
