"""What the read API shows of a patient: a profile cut to a role's fields, and a timeline page.

A field outside the role's set is absent, not blanked. A profile is decrypted only when the role
may see an encrypted field. An event's payload is sealed as a whole, so the timeline shows it
only to a role that may see identifying values, and only when every catalog field the event
sets is one the role may see (found by folding the event alone into an empty profile: the same
code the projection runs, so the check cannot drift from what the event really holds).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import Connection, and_, or_, select

from telecrm.domain.clock import from_micros
from telecrm.domain.events import event_from_stored
from telecrm.domain.fields import FIELDS
from telecrm.domain.lifecycle import CRM_STATUS
from telecrm.domain.profile import Profile, apply_event
from telecrm.ingest.tables import events
from telecrm.profiles.codec import decode
from telecrm.profiles.tables import profile_rows, profiles, stage_transitions
from telecrm.security.envelope import FieldCipher
from telecrm.security.shredding import open_payload, with_salts

EVENT, STAGE = 0, 1  # timeline item kinds, in the order items of the same instant are listed


def sensitive(names: Sequence[str]) -> list[str]:
    """The names among ``names`` that an audit entry must list: encrypted or PHI fields."""
    return [n for n in names if FIELDS[n].encrypted or FIELDS[n].is_phi]


def live_profile(conn: Connection, patient_id: str) -> Any:
    """The patient's profile row (not an anonymous visitor's merged into another), or None."""
    return conn.execute(
        profile_rows().where(profiles.c.patient_key == patient_id, profiles.c.merged_into.is_(None))
    ).first()


def profile_json(row: Any, cipher: FieldCipher | None, allowed: frozenset[str]) -> dict[str, Any]:
    """The profile with only ``allowed`` fields, in catalog order; decrypts only with a cipher."""
    stored = decode(row, cipher)
    p = stored.profile
    fields = {name: p.values[name] for name in FIELDS if name in allowed and name in p.values}
    return {
        "patient_id": p.patient_key,
        "stage": p.stage.value if p.stage else None,
        "crm_status": CRM_STATUS[p.stage] if p.stage else None,
        "stage_since": p.stage_since.isoformat() if p.stage_since else None,
        "deleted": p.deleted,
        "fields": fields,
    }


def fields_set_by(type_: str, version: int, data: dict[str, Any], patient_key: str) -> set[str]:
    """The catalog fields this event writes, folding it alone into an empty profile."""
    event = event_from_stored(
        event_id="probe",
        type_=type_,
        version=version,
        occurred_at=from_micros(0),
        patient_id=patient_key,
        anonymous_id=None,
        data=data,
    )
    probe = Profile(patient_key)
    apply_event(probe, event)
    return set(probe.values)


def _events_after(patient_key: str, after: tuple[int, ...] | None, limit: int) -> Any:
    query = with_salts(
        select(
            events.c.seq,
            events.c.event_id,
            events.c.type,
            events.c.version,
            events.c.occurred_us,
            events.c.payload,
        )
    ).where(events.c.patient_key == patient_key)
    if after is not None:
        at, kind, seq = after
        if kind == EVENT:
            query = query.where(
                or_(events.c.occurred_us > at, and_(events.c.occurred_us == at, events.c.seq > seq))
            )
        else:  # after a stage change at `at`: the events at `at` were listed before it
            query = query.where(events.c.occurred_us > at)
    return query.order_by(events.c.occurred_us, events.c.seq).limit(limit + 1)


def _stages_after(patient_key: str, after: tuple[int, ...] | None, limit: int) -> Any:
    t = stage_transitions.c
    query = select(t.ordinal, t.at_us, t.from_stage, t.to_stage, t.reason, t.event_id).where(
        t.patient_key == patient_key
    )
    if after is not None:
        at, kind, ordinal = after
        if kind == STAGE:
            query = query.where(or_(t.at_us > at, and_(t.at_us == at, t.ordinal > ordinal)))
        else:
            query = query.where(t.at_us >= at)
    return query.order_by(t.at_us, t.ordinal).limit(limit + 1)


def _event_data(
    row: Any, cipher: FieldCipher, patient_key: str, allowed: frozenset[str]
) -> tuple[dict[str, Any] | None, set[str]]:
    data = open_payload(cipher, row)
    if data is None:  # shredded by an erasure: type and time only
        return None, set()
    try:
        written = fields_set_by(row.type, row.version, data, patient_key)
    except Exception:  # an event the fold cannot read alone: withhold rather than guess
        return None, set()
    if not written <= allowed:
        return None, set()
    return data, written


def timeline_page(
    conn: Connection,
    patient_key: str,
    *,
    after: tuple[int, ...] | None,
    limit: int,
    cipher: FieldCipher | None,
    allowed: frozenset[str],
) -> tuple[list[dict[str, Any]], tuple[int, int, int] | None, set[str]]:
    """One page of events and stage changes in time order: (items, next cursor, fields shown)."""
    keyed: list[tuple[tuple[int, int, int], Any]] = []
    for row in conn.execute(_events_after(patient_key, after, limit)):
        keyed.append(((int(row.occurred_us), EVENT, int(row.seq)), row))
    for row in conn.execute(_stages_after(patient_key, after, limit)):
        keyed.append(((int(row.at_us), STAGE, int(row.ordinal)), row))
    keyed.sort(key=lambda item: item[0])
    page, more = keyed[:limit], len(keyed) > limit
    items: list[dict[str, Any]] = []
    shown: set[str] = set()
    for (at_us, kind, _), row in page:
        at = from_micros(at_us).isoformat()
        if kind == STAGE:
            items.append(
                {
                    "kind": "stage",
                    "at": at,
                    "from": row.from_stage,
                    "to": row.to_stage,
                    "reason": row.reason,
                    "event_id": row.event_id,
                }
            )
            continue
        item: dict[str, Any] = {
            "kind": "event",
            "at": at,
            "event_id": row.event_id,
            "type": row.type,
            "version": row.version,
        }
        if cipher is not None:
            data, written = _event_data(row, cipher, patient_key, allowed)
            if data is not None:
                item["data"] = data
                shown |= written
        items.append(item)
    next_key = page[-1][0] if more and page else None
    return items, next_key, shown
