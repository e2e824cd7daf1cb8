"""drift: per-image novelty, and the drift sums of the daily rollup

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-09 09:00:00

``images.novelty`` is the cosine distance of an image's embedding to the nearest
centroid of its model's training reference (null for images stored before, or by a
model without a reference). ``classify_daily`` gains the sums the drift report reads:
``confidence_n``/``confidence_sum``, ``novelty_n``/``novelty_sum`` and ``far_n``
(answers beyond the model's far threshold); existing rows start at 0. An index by
(model_version, day) serves the report's reads of a version's first week.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

_SUMS = (
    ("confidence_n", sa.BigInteger()),
    ("confidence_sum", sa.Float()),
    ("novelty_n", sa.BigInteger()),
    ("novelty_sum", sa.Float()),
    ("far_n", sa.BigInteger()),
)


def upgrade() -> None:
    with op.batch_alter_table("images", schema=None) as batch_op:
        batch_op.add_column(sa.Column("novelty", sa.Float(), nullable=True))
    with op.batch_alter_table("classify_daily", schema=None) as batch_op:
        for name, type_ in _SUMS:
            batch_op.add_column(sa.Column(name, type_, nullable=False, server_default="0"))
    op.create_index(
        "ix_classify_daily_version_day", "classify_daily", ["model_version", "day"], unique=False
    )


def downgrade() -> None:
    op.drop_index("ix_classify_daily_version_day", table_name="classify_daily")
    with op.batch_alter_table("classify_daily", schema=None) as batch_op:
        for name, _ in reversed(_SUMS):
            batch_op.drop_column(name)
    with op.batch_alter_table("images", schema=None) as batch_op:
        batch_op.drop_column("novelty")
