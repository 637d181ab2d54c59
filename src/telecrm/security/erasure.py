"""`telecrm patients erase ID --reason`: remove a patient's identifying and health values.

Erasure is an event: a `patient.deleted` written through the intake (source `erasure`) and
folded like the platform's own, so every part already knows what to do with it. The profile
keeps counters and stage history for aggregate reporting but loses every encrypted value; the
messaging planner and dispatcher send nothing more to it; journeys end its instances; the CRM
sync archives or deletes its records in destinations whose mapping has `mode: mirror`; a rebuild
of the projection gives the same erased profile. The request, with its reason, is in the audit
log.

In the same transaction the patient's salts (theirs and their linked visitors') are destroyed
(crypto-shredding, security/shredding.py): every payload of theirs in the append-only log becomes
unreadable, for good, while its id, type and time stay so the log stays whole. The profile and
its stage history are deleted there too, and the fold rebuilds them from what is left (the
shredded events are skipped), which is exactly what a rebuild of the projection will find.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime

import orjson
from sqlalchemy import Connection, Engine, delete, func, select

from telecrm.analytics.tables import analytics_inputs
from telecrm.domain.clock import to_micros
from telecrm.domain.events import parse_event
from telecrm.ingest.intake import EventIntake
from telecrm.ingest.tables import events, identity_links
from telecrm.profiles.tables import profile_scores, profiles, stage_transitions
from telecrm.profiles.views import find_patient_key
from telecrm.security.audit import AuditEntry, append_audit
from telecrm.security.blind_index import BlindIndex
from telecrm.security.envelope import FieldCipher
from telecrm.security.errors import SecurityError
from telecrm.security.shredding import UNSALTED_TYPES, reseal_legacy, shred
from telecrm.security.tables import shredded_patients


class AlreadyErased(SecurityError):
    """The patient was erased before: nothing left to remove."""


@dataclass(frozen=True, slots=True)
class ErasureRequest:
    patient_key: str
    event_id: str
    sealed_fields: int  # encrypted values the profile held, all removed by the fold
    keys_destroyed: int  # patient salts destroyed: the patient's and their linked visitors'
    events_shredded: int  # event payloads that no key can open any more


def request_erasure(
    engine: Engine,
    intake: EventIntake,
    index: BlindIndex,
    patient_id: str,
    *,
    cipher: FieldCipher,
    reason: str,
    actor: str,
    now: datetime,
) -> ErasureRequest:
    """Store the erasure event and its audit entry in one transaction (fold it afterwards)."""
    with engine.begin() as conn:
        if (
            conn.execute(
                select(shredded_patients.c.patient_key).where(
                    shredded_patients.c.patient_key == patient_id
                )
            ).first()
            and not conn.execute(
                select(profiles.c.patient_key).where(
                    profiles.c.patient_key == patient_id, profiles.c.deleted.is_(False)
                )
            ).first()
        ):
            raise AlreadyErased(f"{patient_id} was erased before: nothing left to remove")
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
        keys = [key, *linked_visitor_keys(conn, row.patient_id)]
        shredded = conn.execute(
            select(func.count())
            .select_from(events)
            .where(events.c.patient_key.in_(keys), events.c.type.not_in(UNSALTED_TYPES))
        ).scalar_one()
        destroyed = shred(conn, keys, now_us=to_micros(now))
        reseal_legacy(conn, cipher, keys)  # payloads from before per-patient salts
        # The fold starts this patient again from the log, where only the erasure is readable.
        conn.execute(delete(stage_transitions).where(stage_transitions.c.patient_key == key))
        conn.execute(delete(profiles).where(profiles.c.patient_key == key))
        conn.execute(delete(profile_scores).where(profile_scores.c.patient_key == key))
        conn.execute(delete(analytics_inputs))  # it holds this patient's PHI: runs read again
        append_audit(
            conn,
            [AuditEntry(actor, "erase", "patient", [key], [], reason)],
            at_us=to_micros(now),
        )
    return ErasureRequest(key, event.id, sealed, destroyed, int(shredded))


def linked_visitor_keys(conn: Connection, patient_id: str | None) -> list[str]:
    if patient_id is None:
        return []
    return [
        f"anon:{anon}"
        for (anon,) in conn.execute(
            select(identity_links.c.anonymous_id).where(identity_links.c.patient_id == patient_id)
        )
    ]
