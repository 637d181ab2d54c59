"""Profiles (clear counters and facts, sealed identifying fields) and their stage history."""

from __future__ import annotations

from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Index,
    Integer,
    Select,
    SmallInteger,
    String,
    Table,
    Text,
    false,
    select,
    text,
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

# The live patients (not erased, not a merged visitor, with a patient id): what an analytics run
# lists every day. Partial, so the list is a scan of this index alone (a third of the rows).
# A query must state the same condition, as SQL text, for the planner to use the index.
LIVE_WHERE = "deleted = false AND patient_id IS NOT NULL AND merged_into IS NULL"
LIVE_WHERE_SQLITE = LIVE_WHERE.replace("false", "0")
Index(
    "ix_profiles_live",
    profiles.c.patient_key,
    sqlite_where=text(LIVE_WHERE_SQLITE),
    postgresql_where=text(LIVE_WHERE),
)

# The latest `telecrm analytics run` per patient, kept beside the profile instead of folded from
# the event log (docs/analytics.md, "Where the scores live"): JSON with the four clear numbers,
# adherence as an AES-GCM token (PHI), `scored_us` and the run's id. Deleted with the profile.
profile_scores = Table(
    "profile_scores",
    metadata,
    Column("patient_key", String(140), primary_key=True),
    Column("scores", Text, nullable=False),
    Column("updated_us", BigInteger, nullable=False),
)


def profile_rows() -> Select[Any]:
    """Profile rows with their scores (`row.scores`, None if never scored): what a reader that
    shows or sends the scores selects, so `codec.decode` lays them over the folded profile."""
    return select(profiles, profile_scores.c.scores).outerjoin_from(
        profiles, profile_scores, profiles.c.patient_key == profile_scores.c.patient_key
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
