"""analytics_inputs: what the last analytics run read, sealed, so the next reads only what changed

Revision ID: 0013
Revises: 0012
Create Date: 2026-11-27 15:30:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "analytics_inputs",
        sa.Column("inputs_id", sa.String(length=40), nullable=False),
        sa.Column("built_us", sa.BigInteger(), nullable=False),
        sa.Column("frontier", sa.BigInteger(), nullable=False),
        sa.Column("summary", sa.Text(), nullable=False),
        sa.Column("sealed", sa.LargeBinary(), nullable=False),
        sa.PrimaryKeyConstraint("inputs_id", name=op.f("pk_analytics_inputs")),
    )


def downgrade() -> None:
    op.drop_table("analytics_inputs")
