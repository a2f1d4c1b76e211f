"""Deployments, each targeted device's progress through them, and every manifest published to a device.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-27
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision: str | None = "0004"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    op.create_table(
        "deployments",
        sa.Column("name", sa.String(128), nullable=False),
        sa.Column("serial", sa.Integer(), nullable=False),
        sa.Column("image_name", sa.String(128), nullable=False),
        sa.Column("image_version", sa.Integer(), nullable=False),
        sa.Column("manifest_digest", sa.String(80), nullable=False),
        sa.Column("image", sa.Text(), nullable=False),
        sa.Column("device_id", sa.String(128), nullable=True),
        sa.Column("target", sa.Text(), nullable=True),
        sa.Column("priority", sa.Integer(), nullable=False),
        sa.Column("module", sa.String(128), nullable=False),
        sa.Column("env", sa.Text(), nullable=False),
        sa.Column("restart_policy", sa.String(16), nullable=False),
        sa.Column("settings", sa.Text(), nullable=False),
        sa.Column("rollout", sa.Text(), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("name", name="pk_deployments"),
    )
    op.create_table(
        "deployment_devices",
        sa.Column("deployment", sa.String(128), nullable=False),
        sa.Column("device_id", sa.String(128), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("batch", sa.Integer(), nullable=True),
        sa.Column("version", sa.BigInteger(), nullable=True),
        sa.Column("updated_at", sa.Float(), nullable=False),
        sa.ForeignKeyConstraint(
            ["deployment"],
            ["deployments.name"],
            name="fk_deployment_devices_deployment_deployments",
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("deployment", "device_id", name="pk_deployment_devices"),
    )
    op.create_index("ix_deployment_devices_device_id", "deployment_devices", ["device_id"])
    op.create_table(
        "device_manifests",
        sa.Column("device_id", sa.String(128), nullable=False),
        sa.Column("version", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("document", sa.Text(), nullable=False),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("device_id", "version", name="pk_device_manifests"),
    )


def downgrade() -> None:
    op.drop_table("device_manifests")
    op.drop_index("ix_deployment_devices_device_id", table_name="deployment_devices")
    op.drop_table("deployment_devices")
    op.drop_table("deployments")
