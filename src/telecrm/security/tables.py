"""Wrapped data keys, the append-only hash-chained audit log, API clients and token signing keys."""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Integer,
    LargeBinary,
    String,
    Table,
    Text,
    false,
)

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

# OAuth clients of the read API (docs/api.md). The secret is stored as an scrypt hash with its
# parameters and salt; the role decides what the client may read (security/roles.py).
api_clients = Table(
    "api_clients",
    metadata,
    Column("client_id", String(40), primary_key=True),
    Column("name", String(100), nullable=False),
    Column("role", String(32), nullable=False),
    Column("secret_hash", String(200), nullable=False),
    Column("created_us", BigInteger, nullable=False),
    Column("disabled", Boolean, nullable=False, server_default=false()),
    Column("disabled_us", BigInteger),
)

# The ES256 keys telecrm signs its access tokens with. The private key is sealed by the keyring
# (a data key wrapped by the master key); the public half is what /.well-known/jwks.json shows.
signing_keys = Table(
    "signing_keys",
    metadata,
    Column("kid", String(64), primary_key=True),
    Column("algorithm", String(8), nullable=False),
    Column("public_jwk", Text, nullable=False),
    Column("sealed_private", Text, nullable=False),
    Column("active", Boolean, nullable=False),
    Column("created_us", BigInteger, nullable=False),
)


# Crypto-shredding (security/shredding.py): one random salt per patient key; the patient's event
# payloads are sealed under a key derived from the data key and this salt (envelope format 2).
# An erasure deletes the row, so those payloads can never be read again, by anyone.
patient_salts = Table(
    "patient_salts",
    metadata,
    Column("patient_key", String(140), primary_key=True),
    Column("salt", LargeBinary(32), nullable=False),
    Column("created_us", BigInteger, nullable=False),
)

# Patient keys whose salt an erasure destroyed, and when (no value, only the opaque key).
shredded_patients = Table(
    "shredded_patients",
    metadata,
    Column("patient_key", String(140), primary_key=True),
    Column("shredded_us", BigInteger, nullable=False),
)
