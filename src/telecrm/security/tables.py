"""Wrapped data keys and the append-only, hash-chained audit log."""

from __future__ import annotations

from sqlalchemy import BigInteger, Boolean, Column, Integer, LargeBinary, String, Table, Text

from telecrm.store.metadata import SequenceKey, metadata

# Data-encryption keys, each wrapped (AES-GCM) by a key-encryption key that never touches the
# database. purpose: "data" (field encryption) or "index" (blind-index HMAC key).
data_keys = Table(
    "data_keys",
    metadata,
    Column("key_id", String(16), primary_key=True),
    Column("purpose", String(8), nullable=False),
    Column("wrapped", LargeBinary, nullable=False),
    Column("kek_id", String(16), nullable=False),
    Column("active", Boolean, nullable=False),
    Column("created_us", BigInteger, nullable=False),
    Column("rewrapped_us", BigInteger),
)

audit_log = Table(
    "audit_log",
    metadata,
    Column("seq", SequenceKey, primary_key=True, autoincrement=False),
    Column("at_us", BigInteger, nullable=False),
    Column("actor", String(128), nullable=False),
    Column("action", String(32), nullable=False),
    Column("record_type", String(32), nullable=False),
    Column("record_ids", Text, nullable=False),  # JSON list of opaque ids, never PHI values
    Column("fields", Text, nullable=False),  # JSON list of catalog field names
    Column("purpose", String(64), nullable=False),
    Column("outcome", String(16), nullable=False),
    Column("prev_hash", String(64), nullable=False),
    Column("hash", String(64), nullable=False),
)

# The chain's head, one row: appends lock it (serialising the chain on PostgreSQL) and verify
# compares it with the last row, so deleting the newest rows is detected too.
audit_head = Table(
    "audit_head",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("last_seq", BigInteger, nullable=False),
    Column("last_hash", String(64), nullable=False),
)
