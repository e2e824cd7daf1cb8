"""job heartbeats: a running job names when its process last said it was alive

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-08 00:00:00

``jobs.heartbeat_at``: the in-process runner that claimed a job writes it every few
seconds while the job runs. A running job whose heartbeat is older than
``CARTAG_JOB_LEASE_S`` lost its process (killed, or one of ``cartag serve --workers N``
that died and was replaced) and any runner puts it back in the queue, without a restart.
Null on the rows already there: a job left running by a process of before this
revision counts as one whose heartbeat stopped.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.add_column(sa.Column("heartbeat_at", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.drop_column("heartbeat_at")
