"""The right of access (45 CFR 164.524): one patient's whole record, decrypted, as a stable JSON
document (`export_schema.ExportRecord`) and a readable HTML page.

`export_record` and `render_export_html` only read; `export_patient` adds the audit entry (who,
why) in the caller's transaction. The CLI and the API call these; the files are written by
`security.safe_names`, never under a name the patient id chooses.
"""

from __future__ import annotations

from dataclasses import fields as dataclass_fields
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, select

from telecrm.domain.clock import from_micros
from telecrm.domain.fields import FIELDS
from telecrm.domain.lifecycle import CRM_STATUS
from telecrm.domain.profile import Facts
from telecrm.ingest.tables import events
from telecrm.journeys.tables import journey_instances
from telecrm.messaging.tables import consent_ledger, messages, nps_responses
from telecrm.profiles.codec import decode
from telecrm.profiles.tables import profile_rows, profiles, stage_transitions
from telecrm.profiles.views import PatientNotFound
from telecrm.security.audit import AuditEntry, append_audit
from telecrm.security.compliance_html import render
from telecrm.security.disclosures import disclosures_for
from telecrm.security.envelope import FieldCipher
from telecrm.security.export_schema import EXPORT_KIND, SCHEMA_VERSION, ExportRecord
from telecrm.security.shredding import open_payload, with_salts

SCORE_FACTS = ("lead_score", "engagement_score", "predicted_ltv", "churn_risk", "scored_at")


def _at(us: int | None) -> datetime | None:
    return None if us is None else from_micros(us)


def _facts(facts: Facts) -> dict[str, Any]:
    """Every lifecycle fact, defaults included, so the keys never depend on the patient."""
    out: dict[str, Any] = {}
    for f in dataclass_fields(Facts):
        value = getattr(facts, f.name)
        out[f.name] = value.isoformat() if isinstance(value, datetime) else value
    return out


def _events(conn: Connection, cipher: FieldCipher, keys: list[str]) -> list[dict[str, Any]]:
    rows = conn.execute(
        with_salts(select(events))
        .where(events.c.patient_key.in_(keys))
        .order_by(events.c.occurred_us, events.c.seq)
    )
    return [
        {
            "id": r.event_id,
            "type": r.type,
            "version": r.version,
            "occurred_at": from_micros(r.occurred_us),
            "received_at": from_micros(r.received_us),
            "source": r.source,
            "data": open_payload(cipher, r),  # None: shredded by an erasure
        }
        for r in rows
    ]


def _messages(conn: Connection, key: str) -> list[dict[str, Any]]:
    m = messages.c
    rows = conn.execute(
        select(messages).where(m.patient_key == key).order_by(m.created_us, m.message_id)
    )
    return [
        {
            "id": r.message_id,
            "channel": r.channel,
            "template": r.template,
            "purpose": r.purpose,
            "source": r.source,
            "status": r.status,
            "reason": r.reason,
            "created_at": from_micros(r.created_us),
            "due_at": from_micros(r.due_us),
            "sent_at": _at(r.sent_us),
            "delivered_at": _at(r.delivered_us),
            "opened_at": _at(r.opened_us),
            "clicked_at": _at(r.clicked_us),
            "replied_at": _at(r.replied_us),
        }
        for r in rows
    ]


def _consent(conn: Connection, key: str) -> list[dict[str, Any]]:
    c = consent_ledger.c
    rows = conn.execute(select(consent_ledger).where(c.patient_key == key).order_by(c.at_us, c.id))
    return [
        {
            "at": from_micros(r.at_us),
            "channel": r.channel,
            "purpose": r.purpose,
            "granted": bool(r.granted),
            "source": r.source,
            "evidence": r.evidence,
        }
        for r in rows
    ]


def _survey_answers(conn: Connection, cipher: FieldCipher, key: str) -> list[dict[str, Any]]:
    n = nps_responses.c
    rows = conn.execute(select(nps_responses).where(n.patient_key == key).order_by(n.at_us, n.id))
    return [
        {
            "at": from_micros(r.at_us),
            "message_id": r.message_id,
            "score": r.score,
            "provider_id": cipher.decrypt_json(
                r.provider_sealed, record_id=r.message_id, field="provider_id"
            )
            if r.provider_sealed
            else None,
        }
        for r in rows
    ]


def _journeys(conn: Connection, key: str) -> list[dict[str, Any]]:
    j = journey_instances.c
    rows = conn.execute(
        select(journey_instances).where(j.patient_key == key).order_by(j.entered_us, j.instance_id)
    )
    return [
        {
            "journey": r.journey,
            "version": r.version,
            "group": r.grp,
            "state": r.state,
            "entered_at": from_micros(r.entered_us),
            "finished_at": _at(r.finished_us),
            "exit_reason": r.exit_reason,
        }
        for r in rows
    ]


def _stage_history(conn: Connection, key: str) -> list[dict[str, Any]]:
    t = stage_transitions.c
    rows = conn.execute(select(stage_transitions).where(t.patient_key == key).order_by(t.ordinal))
    return [
        {
            "at": from_micros(r.at_us),
            "from_stage": r.from_stage,
            "to_stage": r.to_stage,
            "reason": r.reason,
            "event_id": r.event_id,
        }
        for r in rows
    ]


def export_record(
    conn: Connection,
    cipher: FieldCipher,
    patient_key: str,
    *,
    generated_at: datetime | None = None,
) -> dict[str, Any]:
    """Everything telecrm holds about one patient, decrypted, as JSON-ready data (schema v1).

    Reads only: the caller audits (`export_patient` does both). Raises PatientNotFound.
    """
    row = conn.execute(profile_rows().where(profiles.c.patient_key == patient_key)).first()
    if row is None:
        raise PatientNotFound("no patient matches")
    stored = decode(row, cipher)
    p = stored.profile
    profile_values = [
        {
            "field": name,
            "data_point": f.data_point.title,
            "category": f.category.value,
            "phi": f.is_phi,
            "value": p.values[name],
        }
        for name, f in FIELDS.items()
        if name in p.values
    ]
    facts = _facts(p.facts)
    scores = {name: facts[name] for name in SCORE_FACTS} | {
        "adherence_pdc": p.values.get("adherence_pdc")
    }
    records = [
        {"kind": kind, "id": rid, "attributes": attrs}
        for kind, by_id in sorted(p.records.items())
        for rid, attrs in sorted(by_id.items())
    ]
    keys = [patient_key, *(f"anon:{a}" for a in stored.linked_anon)]
    record = ExportRecord.model_validate(
        {
            "schema_version": SCHEMA_VERSION,
            "kind": EXPORT_KIND,
            "generated_at": generated_at,
            "patient": {
                "id": patient_key,
                "stage": p.stage.value if p.stage else None,
                "crm_status": CRM_STATUS[p.stage] if p.stage else None,
                "stage_since": p.stage_since,
                "deleted": p.deleted,
                "merged_into": stored.merged_into,
                "linked_anonymous_ids": list(stored.linked_anon),
            },
            "profile": profile_values,
            "facts": facts,
            "scores": scores,
            "records": records,
            "events": _events(conn, cipher, keys),
            "stage_history": _stage_history(conn, patient_key),
            "messages": _messages(conn, patient_key),
            "consent": _consent(conn, patient_key),
            "survey_answers": _survey_answers(conn, cipher, patient_key),
            "journeys": _journeys(conn, patient_key),
            "disclosures": [d.to_json() for d in disclosures_for(conn, patient_key)],
        }
    )
    return record.model_dump(mode="json")


def export_patient(
    conn: Connection,
    cipher: FieldCipher,
    patient_key: str,
    *,
    actor: str,
    reason: str,
    now_us: int,
) -> dict[str, Any]:
    """`export_record`, and the export in the audit log with who asked and why, in one transaction."""
    record = export_record(conn, cipher, patient_key, generated_at=from_micros(now_us))
    sealed = [v["field"] for v in record["profile"] if FIELDS[v["field"]].encrypted]
    append_audit(
        conn,
        [
            AuditEntry(
                actor=actor,
                action="export",
                record_type="patient",
                record_ids=[patient_key],
                fields=sealed,
                purpose=reason,
            )
        ],
        at_us=now_us,
    )
    return record


def render_export_html(record: dict[str, Any], *, organisation: str = "") -> str:
    """The export as one self-contained, printable HTML page (every value escaped)."""
    parsed = ExportRecord.model_validate(record)
    titles = {name: f.data_point.title for name, f in FIELDS.items()}
    return render("export.html.j2", record=parsed, organisation=organisation, field_titles=titles)
