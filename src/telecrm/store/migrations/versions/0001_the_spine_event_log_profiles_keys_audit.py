"""the spine: event log, profiles, keys, audit

Revision ID: 0001
Revises:
Create Date: 2026-11-25 13:32:39.769274
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:

    op.create_table(
        "audit_head",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("last_seq", sa.BigInteger(), nullable=False),
        sa.Column("last_hash", sa.String(length=64), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_audit_head")),
    )
    op.create_table(
        "audit_log",
        sa.Column(
            "seq",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=False,
            nullable=False,
        ),
        sa.Column("at_us", sa.BigInteger(), nullable=False),
        sa.Column("actor", sa.String(length=128), nullable=False),
        sa.Column("action", sa.String(length=32), nullable=False),
        sa.Column("record_type", sa.String(length=32), nullable=False),
        sa.Column("record_ids", sa.Text(), nullable=False),
        sa.Column("fields", sa.Text(), nullable=False),
        sa.Column("purpose", sa.String(length=64), nullable=False),
        sa.Column("outcome", sa.String(length=16), nullable=False),
        sa.Column("prev_hash", sa.String(length=64), nullable=False),
        sa.Column("hash", sa.String(length=64), nullable=False),
        sa.PrimaryKeyConstraint("seq", name=op.f("pk_audit_log")),
    )
    op.create_table(
        "data_keys",
        sa.Column("key_id", sa.String(length=16), nullable=False),
        sa.Column("purpose", sa.String(length=8), nullable=False),
        sa.Column("wrapped", sa.LargeBinary(), nullable=False),
        sa.Column("kek_id", sa.String(length=16), nullable=False),
        sa.Column("active", sa.Boolean(), nullable=False),
        sa.Column("created_us", sa.BigInteger(), nullable=False),
        sa.Column("rewrapped_us", sa.BigInteger(), nullable=True),
        sa.PrimaryKeyConstraint("key_id", name=op.f("pk_data_keys")),
    )
    op.create_table(
        "events",
        sa.Column(
            "seq",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("event_id", sa.String(length=128), nullable=False),
        sa.Column("type", sa.String(length=64), nullable=False),
        sa.Column("version", sa.SmallInteger(), nullable=False),
        sa.Column("patient_key", sa.String(length=140), nullable=False),
        sa.Column("patient_id", sa.String(length=128), nullable=True),
        sa.Column("anonymous_id", sa.String(length=128), nullable=True),
        sa.Column("occurred_us", sa.BigInteger(), nullable=False),
        sa.Column("received_us", sa.BigInteger(), nullable=False),
        sa.Column("source", sa.String(length=16), nullable=False),
        sa.Column("payload", sa.LargeBinary(), nullable=False),
        sa.Column("processed", sa.Boolean(), server_default=sa.false(), nullable=False),
        sa.PrimaryKeyConstraint("seq", name=op.f("pk_events")),
        sa.UniqueConstraint("event_id", name=op.f("uq_events_event_id")),
    )
    with op.batch_alter_table("events", schema=None) as batch_op:
        batch_op.create_index(
            "ix_events_patient_order", ["patient_key", "occurred_us", "seq"], unique=False
        )

    op.create_table(
        "identity_links",
        sa.Column("anonymous_id", sa.String(length=128), nullable=False),
        sa.Column("patient_id", sa.String(length=128), nullable=False),
        sa.Column("linked_us", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("anonymous_id", name=op.f("pk_identity_links")),
    )
    with op.batch_alter_table("identity_links", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_identity_links_patient_id"), ["patient_id"], unique=False
        )

    op.create_table(
        "import_checkpoints",
        sa.Column("file_sha256", sa.String(length=64), nullable=False),
        sa.Column("path", sa.String(length=1024), nullable=False),
        sa.Column("lines_done", sa.BigInteger(), nullable=False),
        sa.Column("accepted", sa.BigInteger(), nullable=False),
        sa.Column("duplicates", sa.BigInteger(), nullable=False),
        sa.Column("rejected", sa.BigInteger(), nullable=False),
        sa.Column("updated_us", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("file_sha256", name=op.f("pk_import_checkpoints")),
    )
    op.create_table(
        "known_patients",
        sa.Column("patient_id", sa.String(length=128), nullable=False),
        sa.Column("registered_us", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("patient_id", name=op.f("pk_known_patients")),
    )
    op.create_table(
        "pending_patients",
        sa.Column("patient_key", sa.String(length=140), nullable=False),
        sa.Column("enqueued_us", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("patient_key", name=op.f("pk_pending_patients")),
    )
    with op.batch_alter_table("pending_patients", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_pending_patients_enqueued_us"), ["enqueued_us"], unique=False
        )

    op.create_table(
        "profiles",
        sa.Column("patient_key", sa.String(length=140), nullable=False),
        sa.Column("patient_id", sa.String(length=128), nullable=True),
        sa.Column("stage", sa.String(length=20), nullable=True),
        sa.Column("stage_since_us", sa.BigInteger(), nullable=True),
        sa.Column("max_rank", sa.SmallInteger(), server_default="-1", nullable=False),
        sa.Column("email_bidx", sa.String(length=32), nullable=True),
        sa.Column("phone_bidx", sa.String(length=32), nullable=True),
        sa.Column("attributes", sa.Text(), nullable=False),
        sa.Column("sealed", sa.Text(), nullable=False),
        sa.Column("last_occurred_us", sa.BigInteger(), nullable=True),
        sa.Column("last_seq", sa.BigInteger(), nullable=True),
        sa.Column("as_of_us", sa.BigInteger(), nullable=True),
        sa.Column("next_check_us", sa.BigInteger(), nullable=True),
        sa.Column("events_applied", sa.Integer(), server_default="0", nullable=False),
        sa.Column("deleted", sa.Boolean(), server_default=sa.false(), nullable=False),
        sa.Column("merged_into", sa.String(length=128), nullable=True),
        sa.Column("updated_us", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("patient_key", name=op.f("pk_profiles")),
    )
    with op.batch_alter_table("profiles", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_profiles_email_bidx"), ["email_bidx"], unique=False)
        batch_op.create_index(
            batch_op.f("ix_profiles_next_check_us"), ["next_check_us"], unique=False
        )
        batch_op.create_index(batch_op.f("ix_profiles_patient_id"), ["patient_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_profiles_phone_bidx"), ["phone_bidx"], unique=False)
        batch_op.create_index(batch_op.f("ix_profiles_stage"), ["stage"], unique=False)

    op.create_table(
        "stage_transitions",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("patient_key", sa.String(length=140), nullable=False),
        sa.Column("ordinal", sa.Integer(), nullable=False),
        sa.Column("at_us", sa.BigInteger(), nullable=False),
        sa.Column("from_stage", sa.String(length=20), nullable=True),
        sa.Column("to_stage", sa.String(length=20), nullable=False),
        sa.Column("reason", sa.String(length=200), nullable=False),
        sa.Column("event_id", sa.String(length=128), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_stage_transitions")),
    )
    with op.batch_alter_table("stage_transitions", schema=None) as batch_op:
        batch_op.create_index(
            "ix_stage_transitions_patient", ["patient_key", "ordinal"], unique=True
        )
        batch_op.create_index("ix_stage_transitions_to_stage", ["to_stage"], unique=False)

    op.create_table(
        "webhook_messages",
        sa.Column("webhook_id", sa.String(length=256), nullable=False),
        sa.Column("body_sha256", sa.String(length=64), nullable=False),
        sa.Column("received_us", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("webhook_id", name=op.f("pk_webhook_messages")),
    )
    with op.batch_alter_table("webhook_messages", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_webhook_messages_received_us"), ["received_us"], unique=False
        )


def downgrade() -> None:

    with op.batch_alter_table("webhook_messages", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_webhook_messages_received_us"))

    op.drop_table("webhook_messages")
    with op.batch_alter_table("stage_transitions", schema=None) as batch_op:
        batch_op.drop_index("ix_stage_transitions_to_stage")
        batch_op.drop_index("ix_stage_transitions_patient")

    op.drop_table("stage_transitions")
    with op.batch_alter_table("profiles", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_profiles_stage"))
        batch_op.drop_index(batch_op.f("ix_profiles_phone_bidx"))
        batch_op.drop_index(batch_op.f("ix_profiles_patient_id"))
        batch_op.drop_index(batch_op.f("ix_profiles_next_check_us"))
        batch_op.drop_index(batch_op.f("ix_profiles_email_bidx"))

    op.drop_table("profiles")
    with op.batch_alter_table("pending_patients", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_pending_patients_enqueued_us"))

    op.drop_table("pending_patients")
    op.drop_table("known_patients")
    op.drop_table("import_checkpoints")
    with op.batch_alter_table("identity_links", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_identity_links_patient_id"))

    op.drop_table("identity_links")
    with op.batch_alter_table("events", schema=None) as batch_op:
        batch_op.drop_index("ix_events_patient_order")

    op.drop_table("events")
    op.drop_table("data_keys")
    op.drop_table("audit_log")
    op.drop_table("audit_head")
