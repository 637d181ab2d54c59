"""event facts: one fact, one event

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-25 15:19:05.110926
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:

    op.create_table(
        "event_facts",
        sa.Column("fact_key", sa.String(length=64), nullable=False),
        sa.Column("event_id", sa.String(length=128), nullable=False),
        sa.PrimaryKeyConstraint("fact_key", name=op.f("pk_event_facts")),
    )


def downgrade() -> None:

    op.drop_table("event_facts")
