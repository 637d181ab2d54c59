"""pull checkpoints

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-25 15:24:40.941138
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:

    op.create_table(
        "pull_checkpoints",
        sa.Column("resource", sa.String(length=64), nullable=False),
        sa.Column("cursor", sa.String(length=1024), nullable=True),
        sa.Column("high_water", sa.String(length=64), nullable=True),
        sa.Column("updated_us", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("resource", name=op.f("pk_pull_checkpoints")),
    )


def downgrade() -> None:

    op.drop_table("pull_checkpoints")
