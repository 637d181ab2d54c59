"""Imports every part's tables so the metadata (and Alembic) sees the whole schema."""

from __future__ import annotations

from telecrm.analytics import tables as analytics_tables
from telecrm.ingest import tables as ingest_tables
from telecrm.journeys import tables as journey_tables
from telecrm.messaging import tables as messaging_tables
from telecrm.profiles import tables as profile_tables
from telecrm.security import tables as security_tables
from telecrm.sources import tables as source_tables
from telecrm.store.metadata import metadata
from telecrm.sync import tables as sync_tables

__all__ = [
    "analytics_tables",
    "ingest_tables",
    "journey_tables",
    "messaging_tables",
    "metadata",
    "profile_tables",
    "security_tables",
    "source_tables",
    "sync_tables",
]
