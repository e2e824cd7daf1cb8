"""advertiser image URLs: the URL each advertiser names an image by

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-07 21:00:00

Images are shared between advertisers (one image per content or validators), and
``images.url`` is the first URL the image was fetched from, perhaps another
advertiser's. ``advertiser_images`` gains ``url``: the URL (password redacted) through
which that advertiser's request last named the image, so its listings show its own.
Null on the rows already there until the advertiser's next request names the image.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("advertiser_images", schema=None) as batch_op:
        batch_op.add_column(sa.Column("url", sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("advertiser_images", schema=None) as batch_op:
        batch_op.drop_column("url")
