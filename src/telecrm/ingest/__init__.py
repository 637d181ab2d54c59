"""Intake: webhook signatures, idempotency, the append-only event log, bulk import."""
