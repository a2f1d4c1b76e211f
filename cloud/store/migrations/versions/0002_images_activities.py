"""Activities, the image registry, and references that point at a model version or an image.

`model_references` gets a surrogate key and an `image_id` beside `version_id` (exactly one is set), so that
deployments can reference images through the same table. Its rows are kept: the table is copied aside,
recreated with the new shape and filled again, which works the same on SQLite and PostgreSQL.

Revision ID: 0002
Revises: 0001
Create Date: 2025-02-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision: str | None = "0001"
branch_labels: str | None = None
depends_on: str | None = None

_ID = sa.String(32)
_NAME = sa.String(128)
_KEY = sa.String(256)
_COPY = "model_references_0002_copy"
_OLD_COLUMNS = "version_id, kind, ref, active, created_at"


def upgrade() -> None:
    op.create_table(
        "activities",
        sa.Column("id", _ID, nullable=False),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.Column("started_at", sa.Float(), nullable=True),
        sa.Column("ended_at", sa.Float(), nullable=True),
        sa.Column("progress", sa.Float(), nullable=False),
        sa.Column("message", sa.Text(), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("result", _KEY, nullable=True),
        sa.Column("parameters", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_activities"),
    )
    op.create_index("ix_activities_status", "activities", ["status"])
    op.create_index("ix_activities_created_at", "activities", ["created_at"])
    op.create_table(
        "image_repositories",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("name", _NAME, nullable=False),
        sa.Column("last_version", sa.Integer(), server_default="0", nullable=False),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_image_repositories"),
        sa.UniqueConstraint("name", name="uq_image_repositories_name"),
    )
    op.create_table(
        "images",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("repository_id", sa.Integer(), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.Column("manifest_digest", sa.String(80), nullable=False),
        sa.Column("config_digest", sa.String(80), nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("media_type", sa.String(128), nullable=False),
        sa.Column("model_digest", sa.String(80), nullable=True),
        sa.Column("models", sa.Text(), nullable=False),
        sa.Column("activity_id", _ID, nullable=True),
        sa.Column("base", sa.Text(), nullable=True),
        sa.ForeignKeyConstraint(
            ["repository_id"],
            ["image_repositories.id"],
            name="fk_images_repository_id_image_repositories",
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["activity_id"], ["activities.id"], name="fk_images_activity_id_activities", ondelete="SET NULL"
        ),
        sa.PrimaryKeyConstraint("id", name="pk_images"),
        sa.UniqueConstraint("repository_id", "version", name="uq_images_repository_id_version"),
    )
    op.create_index("ix_images_created_at", "images", ["created_at"])
    op.create_index("ix_images_manifest_digest", "images", ["manifest_digest"])
    op.create_table(
        "image_tags",
        sa.Column("image_id", sa.Integer(), nullable=False),
        sa.Column("key", _KEY, nullable=False),
        sa.Column("value", sa.Text(), nullable=False),
        sa.ForeignKeyConstraint(["image_id"], ["images.id"], name="fk_image_tags_image_id_images", ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("image_id", "key", name="pk_image_tags"),
    )
    op.create_index("ix_image_tags_key", "image_tags", ["key"])

    op.execute(f"CREATE TABLE {_COPY} AS SELECT {_OLD_COLUMNS} FROM model_references")
    op.drop_index("ix_model_references_kind_ref", table_name="model_references")
    op.drop_table("model_references")
    op.create_table(
        "model_references",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("version_id", sa.Integer(), nullable=True),
        sa.Column("image_id", sa.Integer(), nullable=True),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("ref", _KEY, nullable=False),
        sa.Column("active", sa.Boolean(), nullable=False),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.ForeignKeyConstraint(
            ["version_id"],
            ["model_versions.id"],
            name="fk_model_references_version_id_model_versions",
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["image_id"], ["images.id"], name="fk_model_references_image_id_images", ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name="pk_model_references"),
        sa.UniqueConstraint("version_id", "kind", "ref", name="uq_model_references_version_id_kind_ref"),
        sa.UniqueConstraint("image_id", "kind", "ref", name="uq_model_references_image_id_kind_ref"),
        sa.CheckConstraint("(version_id IS NULL) <> (image_id IS NULL)", name="ck_model_references_one_target"),
    )
    op.create_index("ix_model_references_kind_ref", "model_references", ["kind", "ref"])
    op.execute(f"INSERT INTO model_references ({_OLD_COLUMNS}) SELECT {_OLD_COLUMNS} FROM {_COPY}")
    op.drop_table(_COPY)


def downgrade() -> None:
    op.execute(f"CREATE TABLE {_COPY} AS SELECT {_OLD_COLUMNS} FROM model_references WHERE version_id IS NOT NULL")
    op.drop_index("ix_model_references_kind_ref", table_name="model_references")
    op.drop_table("model_references")
    op.create_table(
        "model_references",
        sa.Column("version_id", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("ref", _KEY, nullable=False),
        sa.Column("active", sa.Boolean(), nullable=False),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.ForeignKeyConstraint(
            ["version_id"],
            ["model_versions.id"],
            name="fk_model_references_version_id_model_versions",
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("version_id", "kind", "ref", name="pk_model_references"),
    )
    op.create_index("ix_model_references_kind_ref", "model_references", ["kind", "ref"])
    op.execute(f"INSERT INTO model_references ({_OLD_COLUMNS}) SELECT {_OLD_COLUMNS} FROM {_COPY}")
    op.drop_table(_COPY)
    for table in ("image_tags", "images", "image_repositories", "activities"):
        op.drop_table(table)
