"""Event retention: patients with no activity for longer than the retention period are removed.

The projection is a fold of the event log from its start, so pruning *some* of a patient's events
would make a rebuild disagree with the live profile. Retention therefore works per patient: a
patient whose newest event (by when it happened and when telecrm received it) is older than
`TELECRM_EVENT_RETENTION_DAYS` goes whole, with their linked visitors: events, profile, stage
history, messages, consent, journeys, sync bookkeeping and their patient salt (so any copy of the
log in a backup is shredded for them too). A rebuild then finds nothing of them, as the live
projection does.

Kept on purpose: the accounting of disclosures (its own six-year retention, `disclosures prune`),
the audit log (the prune itself is in it, with the patient keys), `event_facts` (so a replay of
an old order or registration is still recognised as known), the CRM records' digests
(`sync_records`; what a CRM keeps is that CRM's retention) and the erasure marks.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Connection, Table, delete, func, select

from telecrm.analytics.tables import analytics_inputs
from telecrm.domain.clock import from_micros
from telecrm.security.audit import AuditEntry, append_audit
from telecrm.security.errors import SecurityError
from telecrm.store.metadata import metadata

EVENT_RETENTION_MIN_DAYS = 2192  # six years, as for the accounting of disclosures
DAY_US = 86_400 * 1_000_000
IN_CHUNK = 500
AUDIT_IDS = 1000  # patient keys per audit entry
# Tables with a patient_key column that retention leaves alone (see the module's docstring).
KEPT = frozenset({"disclosures", "sync_records", "shredded_patients"})


class RetentionTooShortForEvents(SecurityError, ValueError):
    def __init__(self, days: int) -> None:
        super().__init__(
            f"an event retention of {days} days is shorter than {EVENT_RETENTION_MIN_DAYS} days "
            "(six years): patient records must outlive the accounting of their disclosures"
        )


@dataclass(frozen=True, slots=True)
class RetentionReport:
    cutoff: datetime
    patients: int  # patients (and never-registered visitors) removed
    events: int  # event rows deleted
    rows: dict[str, int]  # rows deleted per other table
    dry_run: bool


def _patient_tables() -> list[Table]:
    return [
        t
        for t in metadata.sorted_tables
        if "patient_key" in t.c and t.name not in KEPT and t.name != "events"
    ]


def stale_patients(conn: Connection, *, cutoff_us: int) -> list[str]:
    """Patient keys (with their linked visitors' keys) whose every event is older than cutoff."""
    from telecrm.ingest.tables import events, identity_links

    newest = (
        select(events.c.patient_key)
        .group_by(events.c.patient_key)
        .having(func.max(events.c.occurred_us) < cutoff_us)
        .having(func.max(events.c.received_us) < cutoff_us)
    )
    stale = set(conn.execute(newest).scalars())
    links: dict[str, str] = {
        a: p
        for a, p in conn.execute(select(identity_links.c.anonymous_id, identity_links.c.patient_id))
    }
    visitors_of: dict[str, list[str]] = {}
    for anon, patient in links.items():
        visitors_of.setdefault(patient, []).append(f"anon:{anon}")
    keys: set[str] = set()
    for key in stale:
        if key.startswith("anon:"):
            if key[5:] not in links:  # a visitor who never registered
                keys.add(key)
            continue  # a linked visitor goes with its patient
        keys.add(key)
        # Once linked, a visitor's new events are stored under the patient's key, so its own
        # rows all predate the link: it is as stale as its patient.
        keys.update(visitors_of.get(key, []))
    return sorted(keys)


def prune_inactive_patients(
    conn: Connection,
    *,
    now_us: int,
    retention_days: int,
    actor: str,
    dry_run: bool = False,
) -> RetentionReport:
    """Remove every patient inactive for longer than the retention, audited, in one transaction."""
    from telecrm.ingest.tables import events, identity_links, known_patients

    if retention_days < EVENT_RETENTION_MIN_DAYS:
        raise RetentionTooShortForEvents(retention_days)
    cutoff_us = now_us - retention_days * DAY_US
    keys = stale_patients(conn, cutoff_us=cutoff_us)
    counted = 0
    rows: dict[str, int] = {}
    for start in range(0, len(keys), IN_CHUNK):
        part = keys[start : start + IN_CHUNK]
        counted += conn.execute(
            select(func.count()).select_from(events).where(events.c.patient_key.in_(part))
        ).scalar_one()
    if dry_run:
        return RetentionReport(from_micros(cutoff_us), len(keys), counted, {}, True)
    from telecrm.journeys.tables import journey_instances, journey_steps

    for start in range(0, len(keys), IN_CHUNK):
        part = keys[start : start + IN_CHUNK]
        instances = select(journey_instances.c.instance_id).where(
            journey_instances.c.patient_key.in_(part)
        )
        done = conn.execute(delete(journey_steps).where(journey_steps.c.instance_id.in_(instances)))
        rows["journey_steps"] = rows.get("journey_steps", 0) + int(done.rowcount or 0)
        for table in _patient_tables():
            done = conn.execute(delete(table).where(table.c.patient_key.in_(part)))
            rows[table.name] = rows.get(table.name, 0) + int(done.rowcount or 0)
        conn.execute(delete(events).where(events.c.patient_key.in_(part)))
        conn.execute(delete(analytics_inputs))  # it holds these patients' data
        anon_ids = [k[5:] for k in part if k.startswith("anon:")]
        ids = [k for k in part if not k.startswith("anon:")]
        for table, condition in (
            (identity_links, identity_links.c.anonymous_id.in_(anon_ids)),
            (identity_links, identity_links.c.patient_id.in_(ids)),
            (known_patients, known_patients.c.patient_id.in_(ids)),
        ):
            done = conn.execute(delete(table).where(condition))
            rows[table.name] = rows.get(table.name, 0) + int(done.rowcount or 0)
    purpose = f"retention: patients inactive for more than {retention_days} days"
    chunks = [keys[i : i + AUDIT_IDS] for i in range(0, len(keys), AUDIT_IDS)]
    append_audit(
        conn,
        [
            AuditEntry(actor, "delete", "patient", ids, fields=[], purpose=purpose)
            for ids in chunks or [[]]
        ],
        at_us=now_us,
    )
    return RetentionReport(
        from_micros(cutoff_us), len(keys), counted, {k: v for k, v in rows.items() if v}, False
    )
