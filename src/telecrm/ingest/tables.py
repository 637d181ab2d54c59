"""The event log and the intake's bookkeeping tables."""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Index,
    LargeBinary,
    SmallInteger,
    String,
    Table,
    false,
)

from telecrm.store.metadata import SequenceKey, metadata

# Append-only. `payload` is the event's `data`, envelope-encrypted with AAD = (event id, "data").
events = Table(
    "events",
    metadata,
    Column("seq", SequenceKey, primary_key=True, autoincrement=True),
    Column("event_id", String(128), nullable=False, unique=True),
    Column("type", String(64), nullable=False),
    Column("version", SmallInteger, nullable=False),
    Column("patient_key", String(140), nullable=False),
    Column("patient_id", String(128)),
    Column("anonymous_id", String(128)),
    Column("occurred_us", BigInteger, nullable=False),
    Column("received_us", BigInteger, nullable=False),
    Column("source", String(16), nullable=False),
    Column("payload", LargeBinary, nullable=False),
    Column("processed", Boolean, nullable=False, server_default=false()),
    # The one secondary index: the worker reads a patient's events in order, and filtering a
    # patient's few rows on `processed` needs no index of its own. Every index costs the intake.
    Index("ix_events_patient_order", "patient_key", "occurred_us", "seq"),
)

# Standard Webhooks message ids already accepted: a retry of the same message is idempotent,
# the same id with another body is a replay and is refused.
webhook_messages = Table(
    "webhook_messages",
    metadata,
    Column("webhook_id", String(256), primary_key=True),
    Column("body_sha256", String(64), nullable=False),
    Column("received_us", BigInteger, nullable=False, index=True),
)

# Patients the platform registered: later events for anyone else are refused at the door.
known_patients = Table(
    "known_patients",
    metadata,
    Column("patient_id", String(128), primary_key=True),
    Column("registered_us", BigInteger, nullable=False),
)

# A visitor's anonymous id, linked to the patient when they register.
identity_links = Table(
    "identity_links",
    metadata,
    Column("anonymous_id", String(128), primary_key=True),
    Column("patient_id", String(128), nullable=False, index=True),
    Column("linked_us", BigInteger, nullable=False),
)

# Patients with events not yet folded into their profile: the worker's queue.
pending_patients = Table(
    "pending_patients",
    metadata,
    Column("patient_key", String(140), primary_key=True),
    Column("enqueued_us", BigInteger, nullable=False, index=True),
)

# Resumable bulk imports: how far each file got.
import_checkpoints = Table(
    "import_checkpoints",
    metadata,
    Column("file_sha256", String(64), primary_key=True),
    Column("path", String(1024), nullable=False),
    Column("lines_done", BigInteger, nullable=False),
    Column("accepted", BigInteger, nullable=False),
    Column("duplicates", BigInteger, nullable=False),
    Column("rejected", BigInteger, nullable=False),
    Column("updated_us", BigInteger, nullable=False),
)

# One row per fact an accepted event stated (see domain.events.FACT_FIELDS): a second event id
# for the same fact is a duplicate, whichever way it came in (webhook, import, pull).
event_facts = Table(
    "event_facts",
    metadata,
    Column("fact_key", String(64), primary_key=True),
    Column("event_id", String(128), nullable=False),
)

# Where `telecrm pull` got to in each of the platform API's collections: a cursor while a walk
# is under way, and the newest updated_at seen, which the next walk starts from.
pull_checkpoints = Table(
    "pull_checkpoints",
    metadata,
    Column("resource", String(64), primary_key=True),
    Column("cursor", String(1024)),
    Column("high_water", String(64)),
    Column("updated_us", BigInteger, nullable=False),
)
