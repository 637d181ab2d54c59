"""profile_scores: the latest analytics run's scores per patient, beside the profile

`telecrm analytics run` writes its numbers here in bulk instead of one `analytics.scored` event
per patient folded by the projection (docs/analytics.md, "Where the scores live").

Revision ID: 0011
Revises: 0010
Create Date: 2026-11-26 13:00:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "profile_scores",
        sa.Column("patient_key", sa.String(length=140), nullable=False),
        sa.Column("scores", sa.Text(), nullable=False),
        sa.Column("updated_us", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("patient_key", name=op.f("pk_profile_scores")),
    )


def downgrade() -> None:
    op.drop_table("profile_scores")
