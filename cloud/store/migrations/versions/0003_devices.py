"""The device registry: devices, their tags, and the state columns the MQTT ingest fills in.

Revision ID: 0003
Revises: 0002
Create Date: 2025-03-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision: str | None = "0002"
branch_labels: str | None = None
depends_on: str | None = None

_NAME = sa.String(128)
_KEY = sa.String(256)


def upgrade() -> None:
    op.create_table(
        "devices",
        sa.Column("id", _NAME, nullable=False),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.Column("last_seen_at", sa.Float(), nullable=True),
        sa.Column("status", sa.String(16), nullable=True),
        sa.Column("reported", sa.Text(), nullable=True),
        sa.Column("desired_version", sa.BigInteger(), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_devices"),
    )
    op.create_table(
        "device_tags",
        sa.Column("device_id", _NAME, nullable=False),
        sa.Column("key", _KEY, nullable=False),
        sa.Column("value", sa.Text(), nullable=False),
        sa.ForeignKeyConstraint(
            ["device_id"], ["devices.id"], name="fk_device_tags_device_id_devices", ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("device_id", "key", name="pk_device_tags"),
    )
    op.create_index("ix_device_tags_key", "device_tags", ["key"])


def downgrade() -> None:
    op.drop_index("ix_device_tags_key", table_name="device_tags")
    op.drop_table("device_tags")
    op.drop_table("devices")
