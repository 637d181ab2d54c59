"""The database source's bookkeeping: per-model checkpoints and keyed digests of rows seen.

Nothing here holds a row's values. A snapshot keeps the row's primary key and patient id (opaque
ids: the models file refuses an identifying column as a key), a keyed HMAC of the whole row and a
short keyed HMAC of each watched column, so a re-read row costs no event and a rule can tell what
a column was before without telecrm keeping what it was.
"""

from __future__ import annotations

from sqlalchemy import BigInteger, Boolean, Column, Integer, String, Table, Text

from telecrm.store.metadata import metadata

# One row per (source, model): how far the incremental read got, when the last full scan (key
# diff) ran, the columns and types the model was first read with (for drift), and why it stopped.
source_checkpoints = Table(
    "source_checkpoints",
    metadata,
    Column("source", String(32), primary_key=True),
    Column("model", String(32), primary_key=True),
    Column("cursor_kind", String(16)),
    Column("high_water", String(64)),
    Column("last_full_scan_us", BigInteger),
    Column("schema_json", Text),
    Column("stopped_reason", String(1024)),
    Column("rows_seen", BigInteger, nullable=False),
    Column("events_emitted", BigInteger, nullable=False),
    Column("updated_us", BigInteger, nullable=False),
)

source_row_snapshots = Table(
    "source_row_snapshots",
    metadata,
    Column("source", String(32), primary_key=True),
    Column("model", String(32), primary_key=True),
    Column("row_key", String(256), primary_key=True),
    Column("patient_id", String(128)),
    # Bumped when a row is deleted: a row re-inserted under the same key is a new row.
    Column("generation", Integer, nullable=False),
    Column("row_digest", String(64)),  # NULL: deleted (a tombstone)
    Column("column_digests", Text, nullable=False),  # JSON {column: 16 hex}
    Column("deleted", Boolean, nullable=False),
    Column("updated_us", BigInteger, nullable=False),
)
