"""Profiles (clear counters and facts, sealed identifying fields) and their stage history."""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Index,
    Integer,
    SmallInteger,
    String,
    Table,
    Text,
    false,
)

from telecrm.store.metadata import SequenceKey, metadata

profiles = Table(
    "profiles",
    metadata,
    Column("patient_key", String(140), primary_key=True),
    Column("patient_id", String(128), index=True),
    Column("stage", String(20), index=True),
    Column("stage_since_us", BigInteger),
    Column("max_rank", SmallInteger, nullable=False, server_default="-1"),
    Column("email_bidx", String(32), index=True),
    Column("phone_bidx", String(32), index=True),
    Column("attributes", Text, nullable=False),  # JSON: non-identifying fields and facts
    Column("sealed", Text, nullable=False),  # JSON: field -> base64 AES-GCM ciphertext
    Column("last_occurred_us", BigInteger),
    Column("last_seq", BigInteger),
    Column("as_of_us", BigInteger),
    Column("next_check_us", BigInteger, index=True),
    Column("events_applied", Integer, nullable=False, server_default="0"),
    Column("deleted", Boolean, nullable=False, server_default=false()),
    Column("merged_into", String(128)),
    Column("updated_us", BigInteger, nullable=False),
)

stage_transitions = Table(
    "stage_transitions",
    metadata,
    Column("id", SequenceKey, primary_key=True, autoincrement=True),
    Column("patient_key", String(140), nullable=False),
    Column("ordinal", Integer, nullable=False),
    Column("at_us", BigInteger, nullable=False),
    Column("from_stage", String(20)),
    Column("to_stage", String(20), nullable=False),
    Column("reason", String(200), nullable=False),
    Column("event_id", String(128)),
    Index("ix_stage_transitions_patient", "patient_key", "ordinal", unique=True),
    Index("ix_stage_transitions_to_stage", "to_stage"),
)
