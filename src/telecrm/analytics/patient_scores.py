"""Scores for a batch of patients from the store: lead score, engagement score and PDC.

`score_patients` reads a batch's profiles, event types and times, and fills in a few queries
(no query per patient), decrypts only the sealed fields the fit rules name and the
prescriptions, audits both reads, and scores the batch with the vectorised functions.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import numpy as np
import numpy.typing as npt
import orjson
from sqlalchemy import Connection, bindparam, select

from telecrm.analytics.adherence import MeasurementPeriod, Pdc, day_number, pdc_table
from telecrm.analytics.engagement import DELIVERED, EngagementScores, engagement_scores
from telecrm.analytics.event_table import EventTable
from telecrm.analytics.fills import IN_CHUNK, fills_for
from telecrm.analytics.lead_score import LeadPoints, LeadScore, lead_points
from telecrm.analytics.scoring_config import ScoringConfig
from telecrm.domain.clock import to_micros
from telecrm.ingest.tables import events
from telecrm.profiles.codec import SCORED_FACTS, SCORED_PHI
from telecrm.profiles.tables import profile_scores, profiles
from telecrm.security.audit import AuditEntry, append_audit
from telecrm.security.envelope import FieldCipher

ENGAGEMENT_EVENTS = (
    "session.tracked",
    "email.opened",
    "email.clicked",
    "sms.replied",
    "consultation.submitted",
    *DELIVERED,
)


@dataclass(frozen=True, slots=True)
class PatientScores:
    patient_key: str
    lead: LeadScore
    engagement: float
    engagement_parts: dict[str, float | None]
    adherence: tuple[Pdc, ...]  # "medication 1", "medication 2"... in this order; names are PHI

    @property
    def mean_pdc(self) -> float | None:
        measured = [p.pdc for p in self.adherence if p.pdc is not None]
        return sum(measured) / len(measured) if measured else None

    def crm_fields(self) -> dict[str, float | None]:
        """What a CRM may show: numbers only, rounded, never NaN."""
        pdc = self.mean_pdc
        return {
            "lead_score": round(self.lead.score, 1),
            "engagement_score": round(self.engagement, 1),
            "adherence_pdc": None if pdc is None else round(pdc, 3),
        }


@dataclass(frozen=True, slots=True)
class ProfilesRead:
    """A batch's profile rows, read once: catalog values (the wanted sealed ones decrypted),
    facts and patient ids, and which sealed fields were decrypted (for the audit entry)."""

    values: dict[str, dict[str, Any]]
    facts: dict[str, dict[str, Any]]
    patient_ids: dict[str, str | None]
    sealed_read: frozenset[str]


def read_profiles(
    conn: Connection, cipher: FieldCipher, keys: Sequence[str], sealed_wanted: frozenset[str]
) -> ProfilesRead:
    query = (
        select(
            profiles.c.patient_key,
            profiles.c.patient_id,
            profiles.c.attributes,
            profiles.c.sealed,
            profile_scores.c.scores,
        )
        .outerjoin_from(
            profiles, profile_scores, profiles.c.patient_key == profile_scores.c.patient_key
        )
        .where(profiles.c.patient_key.in_(bindparam("keys", expanding=True)))
    )
    values: dict[str, dict[str, Any]] = {}
    facts: dict[str, dict[str, Any]] = {}
    ids: dict[str, str | None] = {}
    read: set[str] = set()
    for start in range(0, len(keys), IN_CHUNK):
        for row in conn.execute(query, {"keys": list(keys[start : start + IN_CHUNK])}):
            attributes = orjson.loads(row.attributes)
            held = dict(attributes.get("values", {}))
            held_facts = attributes.get("facts", {})
            sealed = orjson.loads(row.sealed)
            scores = orjson.loads(row.scores) if row.scores is not None else None
            if scores is not None:  # the latest run's numbers, over what the fold saw
                held_facts = {**held_facts, **{n: scores[n] for n in SCORED_FACTS}}
                held.pop(SCORED_PHI, None)
                sealed.pop(SCORED_PHI, None)
                if scores[SCORED_PHI] is not None:
                    sealed[SCORED_PHI] = scores[SCORED_PHI]
            for name in sealed_wanted & sealed.keys():
                held[name] = cipher.decrypt_json(
                    sealed[name], record_id=row.patient_key, field=name
                )
                read.add(name)
            values[row.patient_key] = held
            facts[row.patient_key] = held_facts
            ids[row.patient_key] = row.patient_id
    return ProfilesRead(values, facts, ids, frozenset(read))


def event_table_for(
    conn: Connection, keys: Sequence[str], types: Sequence[str], *, upto: int | None = None
) -> EventTable:
    """`keys`' events of `types` (`upto`: only those with a seq at or below it)."""
    position = {k: i for i, k in enumerate(keys)}
    query = (
        select(events.c.patient_key, events.c.type, events.c.occurred_us)
        .where(events.c.patient_key.in_(bindparam("keys", expanding=True)))
        .where(events.c.type.in_(sorted(set(types))))
    )
    if upto is not None:
        query = query.where(events.c.seq <= upto)
    rows: list[tuple[int, str, int]] = []
    for start in range(0, len(keys), IN_CHUNK):
        result = conn.execute(query, {"keys": list(keys[start : start + IN_CHUNK])})
        rows.extend((position[k], t, us) for k, t, us in result)
    return EventTable.from_rows(len(keys), rows)


@dataclass(frozen=True, slots=True)
class ScoreBatch:
    """A batch's scores as arrays (column i is `keys[i]`): what a run over every patient needs,
    without a `PatientScores` (reasons sorted, parts as dicts) per patient."""

    keys: list[str]
    lead: LeadPoints
    engagement: EngagementScores
    adherence: list[list[Pdc]]  # per patient, in order of first fill
    mean_pdc: npt.NDArray[np.float64]  # NaN where no medication was measured

    def patient_scores(self) -> list[PatientScores]:
        out = []
        for i, key in enumerate(self.keys):
            score, parts = self.engagement.for_patient(i)
            out.append(
                PatientScores(key, self.lead.for_patient(i), score, parts, tuple(self.adherence[i]))
            )
        return out


def score_patients(
    conn: Connection,
    cipher: FieldCipher,
    patient_keys: Sequence[str],
    now: datetime,
    config: ScoringConfig,
    *,
    actor: str,
    purpose: str = "analytics scores",
    period: MeasurementPeriod | None = None,
) -> list[PatientScores]:
    """Scores of the patients in `patient_keys` (unknown keys score as empty profiles)."""
    return score_batch(
        conn, cipher, patient_keys, now, config, actor=actor, purpose=purpose, period=period
    ).patient_scores()


def score_batch(
    conn: Connection,
    cipher: FieldCipher,
    patient_keys: Sequence[str],
    now: datetime,
    config: ScoringConfig,
    *,
    actor: str,
    purpose: str = "analytics scores",
    period: MeasurementPeriod | None = None,
    profiles_read: ProfilesRead | None = None,
) -> ScoreBatch:
    """`score_patients` as arrays; reads and audits the same. `profiles_read`: the batch's
    profiles when the caller read them already (with at least the lead rules' sealed fields)."""
    keys = list(dict.fromkeys(patient_keys))
    period = period or MeasurementPeriod.trailing(now.date())
    lead = config.lead
    read = profiles_read or read_profiles(conn, cipher, keys, lead.profile_fields())
    values, sealed_read = read.values, read.sealed_read
    profile_list = [values.get(k, {}) for k in keys]
    columns = {name: [v.get(name) for v in profile_list] for name in lead.profile_fields()}
    types = [r.event for r in lead.behaviour] + list(ENGAGEMENT_EVENTS)
    table = event_table_for(conn, keys, types)
    fills = fills_for(conn, cipher, keys)
    append_audit(
        conn,
        [
            AuditEntry(actor, "read", "profile", keys, sorted(sealed_read), purpose),
            AuditEntry(actor, "read", "prescription", keys, ["medication", "days_supply"], purpose),
        ]
        if keys
        else [],
        at_us=to_micros(now),
    )
    # Adherence: one group per (patient, medication), medications in order of first fill.
    groups: list[tuple[int, str]] = []
    group_of: dict[tuple[int, str], int] = {}
    g_col, d_col, s_col = [], [], []
    for i, key in enumerate(keys):
        for f in sorted(fills.get(key, []), key=lambda f: f.filled_on):
            g = group_of.setdefault((i, f.medication), len(groups))
            if g == len(groups):
                groups.append((i, f.medication))
            g_col.append(g)
            d_col.append(day_number(f.filled_on))
            s_col.append(f.days_supply)
    pdcs = pdc_table(
        len(groups),
        np.array(g_col, dtype=np.int64),
        np.array(d_col, dtype=np.int64),
        np.array(s_col, dtype=np.int64),
        period,
    )
    per_patient: list[list[Pdc]] = [[] for _ in keys]
    for g, (i, medication) in enumerate(groups):
        per_patient[i].append(pdcs.result(g, medication))
    means = [_mean_pdc(results) for results in per_patient]
    points = lead_points(lead, columns, table, now)
    features = [len(v.get("features_used") or []) for v in profile_list]
    engagement = engagement_scores(
        config.engagement, table, now, features_used=features, adherence=means
    )
    return ScoreBatch(keys, points, engagement, per_patient, np.asarray(means, dtype=np.float64))


def _mean_pdc(results: Sequence[Pdc]) -> float:
    measured = [p.pdc for p in results if p.pdc is not None]
    return sum(measured) / len(measured) if measured else float("nan")
