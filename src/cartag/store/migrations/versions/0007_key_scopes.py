"""key scopes: API keys scoped to advertisers; the fix audit records the key and on_behalf_of

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-08 09:00:00

``api_key_advertisers`` lists the advertisers a scoped key may act for (a key without
rows is unscoped, as every key was before). ``fix_audit`` gains ``key_id`` (the key that
made the fix; null for older rows) and ``on_behalf_of`` (free text a panel may send).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "api_key_advertisers",
        sa.Column("key_id", sa.Integer(), nullable=False),
        sa.Column("advertiser_id", sa.String(length=128), nullable=False),
        sa.ForeignKeyConstraint(
            ["key_id"],
            ["api_keys.id"],
            name=op.f("fk_api_key_advertisers_key_id_api_keys"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("key_id", "advertiser_id", name=op.f("pk_api_key_advertisers")),
    )
    with op.batch_alter_table("fix_audit", schema=None) as batch_op:
        batch_op.add_column(sa.Column("key_id", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("on_behalf_of", sa.String(length=128), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("fix_audit", schema=None) as batch_op:
        batch_op.drop_column("on_behalf_of")
        batch_op.drop_column("key_id")
    op.drop_table("api_key_advertisers")
