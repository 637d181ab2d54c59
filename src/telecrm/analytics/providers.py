"""Provider performance: turnaround, acceptance and satisfaction, aggregated so no provider id
ever leaves.

Provider ids are PHI (DESIGN.md §4.1 "provider relationships"). They are read from the sealed
consultation events and survey answers only to group by, and the read is audited. Providers
are shown as ranks by volume ("provider 1" has the most patients), never by id; providers with
fewer than MIN_CELL patients are pooled into one row.

Turnaround runs from `consultation.submitted` to `consultation.accepted` (minutes) and to the
`prescription.approved` that names the consultation (hours; a prescription without a
consultation id is matched to the patient's latest consultation submitted before it).
Acceptance rate = accepted / assigned; prescription rate = approved / accepted.
Satisfaction is the NPS of the survey answers tied to the provider (promoters 9-10 minus
detractors 0-6, as a percentage).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from statistics import median

from sqlalchemy import Connection, select

from telecrm.analytics.small_cells import MIN_CELL
from telecrm.ingest.tables import events
from telecrm.messaging.tables import nps_responses
from telecrm.security.audit import AuditEntry, append_audit
from telecrm.security.envelope import FieldCipher
from telecrm.security.shredding import open_payload, with_salts

POOLED = "pooled"
TYPES = (
    "consultation.submitted",
    "consultation.assigned",
    "consultation.accepted",
    "prescription.approved",
)


@dataclass(slots=True)
class _Consultation:
    patient: str
    submitted_us: int | None = None
    provider: str | None = None
    assigned: bool = False
    accepted_us: int | None = None
    approved_us: int | None = None


@dataclass(slots=True)
class ProviderRow:
    label: str  # "provider N" (rank by patients), POOLED, or "all"
    providers: int
    patients: int = 0
    assigned: int = 0
    accepted: int = 0
    approved: int = 0
    accept_minutes: list[float] = field(default_factory=list, repr=False)
    approve_hours: list[float] = field(default_factory=list, repr=False)
    scores: list[int] = field(default_factory=list, repr=False)

    @property
    def acceptance_rate(self) -> float | None:
        return self.accepted / self.assigned if self.assigned else None

    @property
    def prescription_rate(self) -> float | None:
        return self.approved / self.accepted if self.accepted else None

    @property
    def median_accept_minutes(self) -> float | None:
        return median(self.accept_minutes) if self.accept_minutes else None

    @property
    def median_approve_hours(self) -> float | None:
        return median(self.approve_hours) if self.approve_hours else None

    @property
    def nps(self) -> float | None:
        if not self.scores:
            return None
        promoters = sum(1 for s in self.scores if s >= 9)
        detractors = sum(1 for s in self.scores if s <= 6)
        return 100.0 * (promoters - detractors) / len(self.scores)


def provider_performance(
    conn: Connection, cipher: FieldCipher, *, actor: str, purpose: str, now_us: int
) -> list[ProviderRow]:
    """One row for all providers, one per provider with >= MIN_CELL patients, one pooled row."""
    consultations: dict[str, _Consultation] = {}
    prescriptions: list[tuple[str, int, str | None]] = []
    read_events: list[str] = []
    query = (
        with_salts(
            select(
                events.c.event_id,
                events.c.type,
                events.c.patient_key,
                events.c.occurred_us,
                events.c.payload,
            )
        )
        .where(events.c.type.in_(TYPES))
        .order_by(events.c.occurred_us, events.c.seq)
    )
    for row in conn.execute(query):
        event_id, type_, patient, at_us = row.event_id, row.type, row.patient_key, row.occurred_us
        data = open_payload(cipher, row)
        if data is None:  # an erased patient's event: not counted
            continue
        read_events.append(event_id)
        cid = data.get("consultation_id")
        if type_ == "prescription.approved":
            prescriptions.append((patient, int(at_us), cid))
            continue
        if not cid:
            continue
        c = consultations.setdefault(cid, _Consultation(patient))
        if type_ == "consultation.submitted":
            c.submitted_us = c.submitted_us or int(at_us)
        else:
            c.provider = data.get("provider_id") or c.provider
            c.assigned = True
            if type_ == "consultation.accepted":
                c.accepted_us = c.accepted_us or int(at_us)
    _match_prescriptions(consultations, prescriptions)
    scores = _survey_scores(conn, cipher)
    if read_events or scores[1]:
        entries = []
        if read_events:
            entries.append(_audit("event", read_events, "data.provider_id", actor, purpose))
        if scores[1]:
            entries.append(_audit("nps_response", scores[1], "provider_id", actor, purpose))
        append_audit(conn, entries, at_us=now_us)
    return _rows(consultations, scores[0])


def _audit(kind: str, ids: list[str], field_name: str, actor: str, purpose: str) -> AuditEntry:
    return AuditEntry(
        actor=actor,
        action="read",
        record_type=kind,
        record_ids=ids,
        fields=[field_name],
        purpose=purpose[:200] or "provider performance (aggregate)",
    )


def _match_prescriptions(
    consultations: dict[str, _Consultation], prescriptions: list[tuple[str, int, str | None]]
) -> None:
    by_patient: dict[str, list[_Consultation]] = {}
    for c in consultations.values():
        by_patient.setdefault(c.patient, []).append(c)
    for patient, at_us, cid in prescriptions:
        target = consultations.get(cid) if cid else None
        if target is None:
            earlier = [
                c
                for c in by_patient.get(patient, [])
                if c.submitted_us is not None and c.submitted_us <= at_us
            ]
            target = max(earlier, key=lambda c: c.submitted_us or 0) if earlier else None
        if target is not None and target.approved_us is None:
            target.approved_us = at_us


def _survey_scores(conn: Connection, cipher: FieldCipher) -> tuple[dict[str, list[int]], list[str]]:
    scores: dict[str, list[int]] = {}
    read: list[str] = []
    for row in conn.execute(
        select(nps_responses).where(nps_responses.c.provider_sealed.is_not(None))
    ):
        provider = cipher.decrypt_json(
            row.provider_sealed, record_id=row.message_id, field="provider_id"
        )
        read.append(str(row.id))
        scores.setdefault(str(provider), []).append(int(row.score))
    return scores, read


def _rows(
    consultations: dict[str, _Consultation], scores: dict[str, list[int]]
) -> list[ProviderRow]:
    per: dict[str, ProviderRow] = {}
    patients: dict[str, set[str]] = {}
    for c in consultations.values():
        if c.provider is None:
            continue
        row = per.setdefault(c.provider, ProviderRow(c.provider, 1))
        patients.setdefault(c.provider, set()).add(c.patient)
        row.assigned += c.assigned
        if c.accepted_us is not None:
            row.accepted += 1
            if c.submitted_us is not None:
                row.accept_minutes.append((c.accepted_us - c.submitted_us) / 60e6)
            if c.approved_us is not None:
                row.approved += 1
                if c.submitted_us is not None:
                    row.approve_hours.append((c.approved_us - c.submitted_us) / 3600e6)
    for provider, values in scores.items():
        per.setdefault(provider, ProviderRow(provider, 1)).scores.extend(values)
    for provider, row in per.items():
        row.patients = len(patients.get(provider, ()))
    ranked = sorted(per.values(), key=lambda r: (-r.patients, -r.assigned))
    everyone = _merged("all", ranked)
    shown = [r for r in ranked if r.patients >= MIN_CELL]
    small = [r for r in ranked if r.patients < MIN_CELL]
    out = [everyone] if ranked else []
    for i, r in enumerate(shown, start=1):
        r.label = f"provider {i}"  # the id is dropped here, before anything is returned
        out.append(r)
    if small:
        out.append(_merged(POOLED, small))
    return out


def _merged(label: str, rows: list[ProviderRow]) -> ProviderRow:
    out = ProviderRow(label, len(rows))
    for r in rows:
        out.patients += r.patients
        out.assigned += r.assigned
        out.accepted += r.accepted
        out.approved += r.approved
        out.accept_minutes.extend(r.accept_minutes)
        out.approve_hours.extend(r.approve_hours)
        out.scores.extend(r.scores)
    return out
