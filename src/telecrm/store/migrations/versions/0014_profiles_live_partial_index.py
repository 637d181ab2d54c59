"""ix_profiles_live: a partial index on the live patients' keys, for the analytics run's list

Revision ID: 0014
Revises: 0013
Create Date: 2026-11-26 18:30:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None

LIVE_WHERE = "deleted = false AND patient_id IS NOT NULL AND merged_into IS NULL"


def upgrade() -> None:
    op.create_index(
        "ix_profiles_live",
        "profiles",
        ["patient_key"],
        sqlite_where=sa.text(LIVE_WHERE.replace("false", "0")),
        postgresql_where=sa.text(LIVE_WHERE),
    )


def downgrade() -> None:
    op.drop_index("ix_profiles_live", table_name="profiles")
