"""analytics_models: population model fits kept between analytics runs, sealed

Revision ID: 0012
Revises: 0011
Create Date: 2026-11-26 13:30:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "analytics_models",
        sa.Column("model_id", sa.String(length=40), nullable=False),
        sa.Column("fitted_us", sa.BigInteger(), nullable=False),
        sa.Column("cutoff_days", sa.Float(), nullable=False),
        sa.Column("summary", sa.Text(), nullable=False),
        sa.Column("sealed", sa.LargeBinary(), nullable=False),
        sa.PrimaryKeyConstraint("model_id", name=op.f("pk_analytics_models")),
    )
    op.create_index(
        op.f("ix_analytics_models_fitted_us"), "analytics_models", ["fitted_us"], unique=False
    )


def downgrade() -> None:
    op.drop_index(op.f("ix_analytics_models_fitted_us"), table_name="analytics_models")
    op.drop_table("analytics_models")
