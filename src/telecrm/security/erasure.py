"""`telecrm patients erase ID --reason`: remove a patient's identifying and health values.

Erasure is an event: a `patient.deleted` written through the intake (source `erasure`) and
folded like the platform's own, so every part already knows what to do with it. The profile
keeps counters and stage history for aggregate reporting but loses every encrypted value; the
messaging planner and dispatcher send nothing more to it; journeys end its instances; the CRM
sync archives or deletes its records in destinations whose mapping has `mode: mirror`; a rebuild
of the projection gives the same erased profile. The request, with its reason, is in the audit
log.

Not yet (issue 9): crypto-shredding. The patient's earlier event payloads stay in the append-only
log, encrypted under the shared data keys; docs/compliance.md describes the per-patient key that
will let erasure destroy them.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime

import orjson
from sqlalchemy import Engine, select

from telecrm.domain.clock import to_micros
from telecrm.domain.events import parse_event
from telecrm.ingest.intake import EventIntake
from telecrm.profiles.tables import profiles
from telecrm.profiles.views import find_patient_key
from telecrm.security.audit import AuditEntry, append_audit
from telecrm.security.blind_index import BlindIndex
from telecrm.security.errors import SecurityError


class AlreadyErased(SecurityError):
    """The patient was erased before: nothing left to remove."""


@dataclass(frozen=True, slots=True)
class ErasureRequest:
    patient_key: str
    event_id: str
    sealed_fields: int  # encrypted values the profile held, all removed by the fold


def request_erasure(
    engine: Engine,
    intake: EventIntake,
    index: BlindIndex,
    patient_id: str,
    *,
    reason: str,
    actor: str,
    now: datetime,
) -> ErasureRequest:
    """Store the erasure event and its audit entry in one transaction (fold it afterwards)."""
    with engine.begin() as conn:
        key = find_patient_key(conn, index, patient_id=patient_id, email=None, phone=None)
        row = conn.execute(
            select(profiles.c.patient_id, profiles.c.deleted, profiles.c.sealed).where(
                profiles.c.patient_key == key
            )
        ).one()
        if row.deleted:
            raise AlreadyErased(f"{patient_id} was erased before: nothing left to remove")
        sealed = len(orjson.loads(row.sealed))  # field -> token; counted, never decrypted
        digest = hashlib.sha256(f"{key}\x00{to_micros(now)}".encode()).hexdigest()[:24]
        event = parse_event(
            {
                "id": f"er_{digest}",
                "type": "patient.deleted",
                "version": 1,
                "occurred_at": now.isoformat(),
                "patient": {"id": row.patient_id or key},
                "data": {"reason": "erasure_request"},
            },
            now=now,
        )
        intake.store_in(conn, [event], source="erasure", actor=actor)
        append_audit(
            conn,
            [AuditEntry(actor, "erase", "patient", [key], [], reason)],
            at_us=to_micros(now),
        )
    return ErasureRequest(key, event.id, sealed)
