"""fix audit model version: a fix stays with the model whose answer it corrected

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-08 00:00:00

``fix_audit.model_version``: the model version of the image's answer when the fix was
made. The monitor's fix rate per model version (and the "fix rate jumped" dataset
candidates) read it instead of the image's current version, which a re-classification
after a promotion changes: a promoted model was charged with the fixes of the answers it
replaced. Null on the rows already there; those fall back to the image's version.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("fix_audit", schema=None) as batch_op:
        batch_op.add_column(sa.Column("model_version", sa.String(length=80), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("fix_audit", schema=None) as batch_op:
        batch_op.drop_column("model_version")
