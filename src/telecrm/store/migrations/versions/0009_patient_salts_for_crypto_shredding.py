"""crypto-shredding: patient_salts

One random salt per patient key. Event payloads of that patient are sealed under a key derived
from the data key and this salt; deleting the row makes them unreadable (erasure).

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-26 04:00:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "patient_salts",
        sa.Column("patient_key", sa.String(length=140), nullable=False),
        sa.Column("salt", sa.LargeBinary(length=32), nullable=False),
        sa.Column("created_us", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("patient_key", name=op.f("pk_patient_salts")),
    )
    op.create_table(
        "shredded_patients",
        sa.Column("patient_key", sa.String(length=140), nullable=False),
        sa.Column("shredded_us", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("patient_key", name=op.f("pk_shredded_patients")),
    )


def downgrade() -> None:
    op.drop_table("shredded_patients")
    op.drop_table("patient_salts")
