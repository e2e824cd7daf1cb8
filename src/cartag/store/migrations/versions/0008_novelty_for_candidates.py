"""novelty for candidates: images.novelty, how far an image is from the training data

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-07 02:00:00

``images.novelty`` (nullable float) is the cosine distance of the image's embedding to
the nearest centroid of the serving model's training reference; ``cartag dataset create
--candidates far-from-training`` ranks images by it. The drift work adds the same column
in its own 0008 migration; this file only lets the dataset candidates be built and tested
on their own and is dropped when both are merged.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("images", schema=None) as batch_op:
        batch_op.add_column(sa.Column("novelty", sa.Float(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("images", schema=None) as batch_op:
        batch_op.drop_column("novelty")
