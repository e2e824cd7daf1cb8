"""retraining loop: dataset versions and items, review decisions, model registry

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-02 01:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

_TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "dataset_versions",
        sa.Column("ref", sa.String(length=160), nullable=False),
        sa.Column("name", sa.String(length=128), nullable=False),
        sa.Column("number", sa.Integer(), nullable=False),
        sa.Column("parent_ref", sa.String(length=160), nullable=True),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("created_at", _TS, nullable=False),
        sa.Column("created_by", sa.String(length=128), nullable=False),
        sa.Column("frozen_at", _TS, nullable=True),
        sa.Column("fixes_since", _TS, nullable=True),
        sa.Column("manifest_sha256", sa.String(length=64), nullable=True),
        sa.Column("stats", sa.JSON(), nullable=False),
        sa.Column("test_sets", sa.JSON(), nullable=False),
        sa.Column("notes", sa.Text(), nullable=True),
        sa.ForeignKeyConstraint(
            ["parent_ref"],
            ["dataset_versions.ref"],
            name=op.f("fk_dataset_versions_parent_ref_dataset_versions"),
        ),
        sa.PrimaryKeyConstraint("ref", name=op.f("pk_dataset_versions")),
        sa.UniqueConstraint("name", "number", name=op.f("uq_dataset_versions_name")),
    )
    op.create_index(op.f("ix_dataset_versions_name"), "dataset_versions", ["name"])
    op.create_table(
        "dataset_items",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("version_ref", sa.String(length=160), nullable=False),
        sa.Column("content_sha256", sa.String(length=64), nullable=False),
        sa.Column("blob_path", sa.String(length=300), nullable=False),
        sa.Column("image_type", sa.String(length=16), nullable=True),
        sa.Column("color", sa.String(length=16), nullable=True),
        sa.Column("split", sa.String(length=160), nullable=True),
        sa.Column("group_key", sa.String(length=160), nullable=True),
        sa.Column("phash", sa.String(length=16), nullable=True),
        sa.Column("width", sa.Integer(), nullable=True),
        sa.Column("height", sa.Integer(), nullable=True),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("reason", sa.String(length=64), nullable=True),
        sa.Column("provenance", sa.JSON(), nullable=False),
        sa.Column("suspicion", sa.Float(), nullable=True),
        sa.Column("model_label", sa.String(length=16), nullable=True),
        sa.Column("model_confidence", sa.Float(), nullable=True),
        sa.ForeignKeyConstraint(
            ["version_ref"],
            ["dataset_versions.ref"],
            name=op.f("fk_dataset_items_version_ref_dataset_versions"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_dataset_items")),
        sa.UniqueConstraint(
            "version_ref", "content_sha256", name=op.f("uq_dataset_items_version_ref")
        ),
    )
    op.create_index(op.f("ix_dataset_items_version_ref"), "dataset_items", ["version_ref"])
    op.create_index(op.f("ix_dataset_items_content_sha256"), "dataset_items", ["content_sha256"])
    op.create_table(
        "review_decisions",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("version_ref", sa.String(length=160), nullable=False),
        sa.Column("item_id", sa.Integer(), nullable=False),
        sa.Column("action", sa.String(length=16), nullable=False),
        sa.Column("field", sa.String(length=16), nullable=False),
        sa.Column("from_label", sa.String(length=16), nullable=True),
        sa.Column("to_label", sa.String(length=16), nullable=True),
        sa.Column("user", sa.String(length=128), nullable=False),
        sa.Column("created_at", _TS, nullable=False),
        sa.Column("before", sa.JSON(), nullable=False),
        sa.Column("undone_at", _TS, nullable=True),
        sa.Column("undone_by", sa.String(length=128), nullable=True),
        sa.ForeignKeyConstraint(
            ["item_id"],
            ["dataset_items.id"],
            name=op.f("fk_review_decisions_item_id_dataset_items"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["version_ref"],
            ["dataset_versions.ref"],
            name=op.f("fk_review_decisions_version_ref_dataset_versions"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_review_decisions")),
    )
    op.create_index(op.f("ix_review_decisions_version_ref"), "review_decisions", ["version_ref"])
    op.create_index(op.f("ix_review_decisions_item_id"), "review_decisions", ["item_id"])
    op.create_table(
        "model_versions",
        sa.Column("version", sa.String(length=80), nullable=False),
        sa.Column("path", sa.Text(), nullable=False),
        sa.Column("files_sha256", sa.String(length=64), nullable=False),
        sa.Column("dataset_ref", sa.String(length=160), nullable=True),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("card", sa.JSON(), nullable=False),
        sa.Column("metrics", sa.JSON(), nullable=False),
        sa.Column("created_at", _TS, nullable=False),
        sa.Column("created_by", sa.String(length=128), nullable=False),
        sa.PrimaryKeyConstraint("version", name=op.f("pk_model_versions")),
    )
    op.create_table(
        "model_aliases",
        sa.Column("alias", sa.String(length=32), nullable=False),
        sa.Column("version", sa.String(length=80), nullable=False),
        sa.Column("updated_at", _TS, nullable=False),
        sa.Column("updated_by", sa.String(length=128), nullable=False),
        sa.ForeignKeyConstraint(
            ["version"],
            ["model_versions.version"],
            name=op.f("fk_model_aliases_version_model_versions"),
        ),
        sa.PrimaryKeyConstraint("alias", name=op.f("pk_model_aliases")),
    )
    op.create_table(
        "model_deployments",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("alias", sa.String(length=32), nullable=False),
        sa.Column("version", sa.String(length=80), nullable=False),
        sa.Column("started_at", _TS, nullable=False),
        sa.Column("ended_at", _TS, nullable=True),
        sa.Column("by", sa.String(length=128), nullable=False),
        sa.Column("reason", sa.String(length=32), nullable=False),
        sa.ForeignKeyConstraint(
            ["version"],
            ["model_versions.version"],
            name=op.f("fk_model_deployments_version_model_versions"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_model_deployments")),
    )
    op.create_index(op.f("ix_model_deployments_alias"), "model_deployments", ["alias"])
    op.create_index(op.f("ix_model_deployments_version"), "model_deployments", ["version"])
    op.create_table(
        "advertiser_settings",
        sa.Column("advertiser_id", sa.String(length=128), nullable=False),
        sa.Column("reclassify_on_promote", sa.Boolean(), nullable=False),
        sa.Column("updated_at", _TS, nullable=False),
        sa.PrimaryKeyConstraint("advertiser_id", name=op.f("pk_advertiser_settings")),
    )
    op.create_table(
        "advertiser_images",
        sa.Column("advertiser_id", sa.String(length=128), nullable=False),
        sa.Column("image_key", sa.String(length=80), nullable=False),
        sa.Column("last_seen_at", _TS, nullable=False),
        sa.PrimaryKeyConstraint("advertiser_id", "image_key", name=op.f("pk_advertiser_images")),
    )


def downgrade() -> None:
    op.drop_table("advertiser_images")
    op.drop_table("advertiser_settings")
    op.drop_index(op.f("ix_model_deployments_version"), table_name="model_deployments")
    op.drop_index(op.f("ix_model_deployments_alias"), table_name="model_deployments")
    op.drop_table("model_deployments")
    op.drop_table("model_aliases")
    op.drop_table("model_versions")
    op.drop_index(op.f("ix_review_decisions_item_id"), table_name="review_decisions")
    op.drop_index(op.f("ix_review_decisions_version_ref"), table_name="review_decisions")
    op.drop_table("review_decisions")
    op.drop_index(op.f("ix_dataset_items_content_sha256"), table_name="dataset_items")
    op.drop_index(op.f("ix_dataset_items_version_ref"), table_name="dataset_items")
    op.drop_table("dataset_items")
    op.drop_index(op.f("ix_dataset_versions_name"), table_name="dataset_versions")
    op.drop_table("dataset_versions")
