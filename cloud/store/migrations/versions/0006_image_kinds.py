"""Images have a kind (an OCI image, or an FPGA image) and the details their build measured; deployments
record the kind of module their image makes.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-27
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision: str | None = "0005"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    with op.batch_alter_table("images") as batch:
        batch.add_column(sa.Column("kind", sa.String(16), nullable=False, server_default="oci"))
        batch.add_column(sa.Column("details", sa.Text(), nullable=True))
    with op.batch_alter_table("deployments") as batch:
        batch.add_column(sa.Column("module_type", sa.String(16), nullable=False, server_default="oci"))


def downgrade() -> None:
    with op.batch_alter_table("deployments") as batch:
        batch.drop_column("module_type")
    with op.batch_alter_table("images") as batch:
        batch.drop_column("details")
        batch.drop_column("kind")
