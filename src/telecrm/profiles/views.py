"""Read models: one patient's profile (masked unless revealed, always audited) and the stage stats."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, func, select

from telecrm.domain.clock import from_micros
from telecrm.domain.fields import FIELDS
from telecrm.domain.funnels import FunnelResult, funnel_results
from telecrm.domain.lifecycle import CRM_STATUS, Stage
from telecrm.ingest.tables import events
from telecrm.profiles.codec import decode
from telecrm.profiles.tables import profile_rows, profiles, stage_transitions
from telecrm.security.audit import AuditEntry, append_audit
from telecrm.security.blind_index import BlindIndex
from telecrm.security.envelope import FieldCipher


class PatientNotFound(LookupError):
    pass


def mask(value: Any) -> str:
    """A shape-preserving mask: enough to recognise a record, not to learn a value."""
    if isinstance(value, list):
        return f"[{len(value)} item{'s' if len(value) != 1 else ''}]"
    text = str(value)
    if "@" in text:
        local, _, domain = text.partition("@")
        return f"{local[:1]}***@{domain[:1]}***"
    if text.startswith("+") and text[1:].isdigit():
        return "+" + "*" * (len(text) - 5) + text[-4:]
    return text[:1] + "***" if text else ""


@dataclass
class PatientView:
    patient_key: str
    stage: str | None
    crm_status: str | None
    stage_since: str | None
    fields: dict[str, Any]
    history: list[dict[str, Any]]
    revealed: bool


def find_patient_key(
    conn: Connection,
    index: BlindIndex,
    *,
    patient_id: str | None,
    email: str | None,
    phone: str | None,
) -> str:
    if patient_id:
        key = conn.execute(
            select(profiles.c.patient_key).where(profiles.c.patient_key == patient_id)
        ).scalar_one_or_none()
    elif email:
        key = conn.execute(
            select(profiles.c.patient_key).where(profiles.c.email_bidx == index.email(email))
        ).scalar_one_or_none()
    elif phone:
        key = conn.execute(
            select(profiles.c.patient_key).where(profiles.c.phone_bidx == index.phone(phone))
        ).scalar_one_or_none()
    else:
        raise PatientNotFound("give a patient id, --email or --phone")
    if key is None:
        raise PatientNotFound("no patient matches")
    return str(key)


def patient_view(
    conn: Connection,
    cipher: FieldCipher,
    patient_key: str,
    *,
    actor: str,
    reveal_reason: str | None,
    now_us: int,
) -> PatientView:
    row = conn.execute(profile_rows().where(profiles.c.patient_key == patient_key)).first()
    if row is None:
        raise PatientNotFound("no patient matches")
    stored = decode(row, cipher)
    p = stored.profile
    revealed = reveal_reason is not None
    shown: dict[str, Any] = {}
    sealed_read: list[str] = []
    for name in FIELDS:
        if name not in p.values:
            continue
        value = p.values[name]
        if FIELDS[name].encrypted:
            sealed_read.append(name)
            shown[name] = value if revealed else mask(value)
        else:
            shown[name] = value
    append_audit(
        conn,
        [
            AuditEntry(
                actor=actor,
                action="reveal" if revealed else "read",
                record_type="profile",
                record_ids=[patient_key],
                fields=sealed_read,
                purpose=reveal_reason or "masked view",
            )
        ],
        at_us=now_us,
    )
    history = [
        {
            "at": from_micros(t.at_us).isoformat(),
            "from": t.from_stage,
            "to": t.to_stage,
            "reason": t.reason,
            "event_id": t.event_id,
        }
        for t in conn.execute(
            select(stage_transitions)
            .where(stage_transitions.c.patient_key == patient_key)
            .order_by(stage_transitions.c.ordinal)
        )
    ]
    return PatientView(
        patient_key,
        p.stage.value if p.stage else None,
        CRM_STATUS[p.stage] if p.stage else None,
        p.stage_since.isoformat() if p.stage_since else None,
        shown,
        history,
        revealed,
    )


@dataclass
class Stats:
    patients_by_stage: dict[str, int]
    events_by_type: dict[str, int]
    funnels: list[FunnelResult]
    pending_events: int


def stats(conn: Connection) -> Stats:
    live = profiles.c.merged_into.is_(None) & profiles.c.deleted.is_(False)
    by_stage = {
        stage: int(n)
        for stage, n in conn.execute(
            select(profiles.c.stage, func.count()).where(live).group_by(profiles.c.stage)
        )
        if stage is not None
    }
    ordered = {s.value: by_stage.get(s.value, 0) for s in Stage}
    by_type = {
        t: int(n)
        for t, n in conn.execute(
            select(events.c.type, func.count()).group_by(events.c.type).order_by(events.c.type)
        )
    }
    ranks = {
        int(r): int(n)
        for r, n in conn.execute(
            select(profiles.c.max_rank, func.count()).where(live).group_by(profiles.c.max_rank)
        )
    }
    pending = conn.execute(
        select(func.count()).select_from(events).where(events.c.processed.is_(False))
    ).scalar_one()
    return Stats(ordered, by_type, funnel_results(ranks), int(pending))
