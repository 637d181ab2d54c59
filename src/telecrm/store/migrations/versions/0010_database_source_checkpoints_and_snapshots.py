"""database source: source_checkpoints, source_row_snapshots

Per (source, model) checkpoints of the database source, and keyed digests of every row it has
seen (no row values).

Revision ID: 0010
Revises: 0009
Create Date: 2026-11-26 05:00:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "source_checkpoints",
        sa.Column("source", sa.String(length=32), nullable=False),
        sa.Column("model", sa.String(length=32), nullable=False),
        sa.Column("cursor_kind", sa.String(length=16), nullable=True),
        sa.Column("high_water", sa.String(length=64), nullable=True),
        sa.Column("last_full_scan_us", sa.BigInteger(), nullable=True),
        sa.Column("schema_json", sa.Text(), nullable=True),
        sa.Column("stopped_reason", sa.String(length=1024), nullable=True),
        sa.Column("rows_seen", sa.BigInteger(), nullable=False),
        sa.Column("events_emitted", sa.BigInteger(), nullable=False),
        sa.Column("updated_us", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("source", "model", name=op.f("pk_source_checkpoints")),
    )
    op.create_table(
        "source_row_snapshots",
        sa.Column("source", sa.String(length=32), nullable=False),
        sa.Column("model", sa.String(length=32), nullable=False),
        sa.Column("row_key", sa.String(length=256), nullable=False),
        sa.Column("patient_id", sa.String(length=128), nullable=True),
        sa.Column("generation", sa.Integer(), nullable=False),
        sa.Column("row_digest", sa.String(length=64), nullable=True),
        sa.Column("column_digests", sa.Text(), nullable=False),
        sa.Column("deleted", sa.Boolean(), nullable=False),
        sa.Column("updated_us", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("source", "model", "row_key", name=op.f("pk_source_row_snapshots")),
    )


def downgrade() -> None:
    op.drop_table("source_row_snapshots")
    op.drop_table("source_checkpoints")
