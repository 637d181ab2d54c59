"""The sync part's tables: the dirty set, what each CRM accepted, dead letters, disclosures, budgets."""

from __future__ import annotations

from sqlalchemy import BigInteger, Boolean, Column, Index, Integer, String, Table, Text, false

from telecrm.store.metadata import SequenceKey, metadata

# A patient whose CRM records may differ from what the destination holds. Marked in the same
# transaction as the profile change; `version` grows with every mark, so a worker that pushed
# version 3 does not clear a mark that became version 4 while it was pushing.
sync_dirty = Table(
    "sync_dirty",
    metadata,
    Column("destination", String(40), primary_key=True),
    Column("patient_key", String(140), primary_key=True),
    Column("version", Integer, nullable=False, server_default="1"),
    Column("marked_us", BigInteger, nullable=False),
    Column("not_before_us", BigInteger, nullable=False, server_default="0"),
    Column("attempts", Integer, nullable=False, server_default="0"),
    Column("lease_until_us", BigInteger, nullable=False, server_default="0"),
    Column("lease_owner", String(64)),
    Index("ix_sync_dirty_due", "destination", "not_before_us"),
)

# Per (destination, object, record): the hash of what the destination last accepted.
sync_records = Table(
    "sync_records",
    metadata,
    Column("destination", String(40), primary_key=True),
    Column("object", String(40), primary_key=True),
    Column("record_key", String(140), primary_key=True),
    Column("patient_key", String(140), nullable=False),
    Column("crm_id", String(64)),
    Column("accepted_hash", String(32)),
    Column("accepted_us", BigInteger),
    Column(
        "state", String(16), nullable=False
    ),  # accepted | rejected | missing | archived | converted
    Column("code", String(64)),
    Index("ix_sync_records_patient", "destination", "patient_key"),
)

# Records a destination refused for their data, or gave up on: the reason, never a value.
sync_dead_letters = Table(
    "sync_dead_letters",
    metadata,
    Column("id", SequenceKey, primary_key=True, autoincrement=True),
    Column("destination", String(40), nullable=False),
    Column("object", String(40), nullable=False),
    Column("record_key", String(140), nullable=False),
    Column("patient_key", String(140), nullable=False),
    Column("code", String(64), nullable=False),
    Column("detail", Text, nullable=False),
    Column("attempts", Integer, nullable=False),
    Column("first_failed_us", BigInteger, nullable=False),
    Column("last_failed_us", BigInteger, nullable=False),
    Column("status", String(12), nullable=False),  # open | retried | resolved | purged
    Index("ix_sync_dead_letters_open", "destination", "status"),
    Index("ix_sync_dead_letters_record", "destination", "object", "record_key"),
)

# The accounting of disclosures: what was sent where, when, and why (HIPAA §164.528).
disclosures = Table(
    "disclosures",
    metadata,
    Column("id", SequenceKey, primary_key=True, autoincrement=True),
    Column("at_us", BigInteger, nullable=False),
    Column("destination", String(40), nullable=False),
    Column("patient_key", String(140), nullable=False),
    Column("object", String(40), nullable=False),
    Column("record_key", String(140), nullable=False),
    Column("fields", Text, nullable=False),  # JSON list of catalog field names
    Column("phi", Boolean, nullable=False, server_default=false()),
    Column("purpose", String(64), nullable=False),
    Index("ix_disclosures_patient", "patient_key", "at_us"),
)

# One row per CRM account: the shared call budget every worker draws from (GCRA).
rate_budgets = Table(
    "rate_budgets",
    metadata,
    Column("account", String(80), primary_key=True),
    Column("tat_us", BigInteger, nullable=False),  # theoretical arrival time of the next call
    Column("paused_until_us", BigInteger, nullable=False, server_default="0"),
    Column("day", Integer, nullable=False, server_default="0"),  # UTC day number
    Column("day_calls", Integer, nullable=False, server_default="0"),
    Column("calls", BigInteger, nullable=False, server_default="0"),
    Column("refusals", BigInteger, nullable=False, server_default="0"),
    Column("crm_used", BigInteger),  # what the CRM itself last reported (e.g. Sforce-Limit-Info)
    Column("crm_max", BigInteger),
)


# Credentials a CRM rotates (a single-use OAuth refresh token): the newest one, sealed, so a
# restart or another worker does not present one the CRM already spent.
connector_credentials = Table(
    "connector_credentials",
    metadata,
    Column("destination", String(40), primary_key=True),
    Column("name", String(40), primary_key=True),
    Column("sealed", Text, nullable=False),
    Column("updated_us", BigInteger, nullable=False),
)
