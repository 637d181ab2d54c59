"""What one sync round learned, and the single transaction that records it.

Accepted digests and CRM ids, refusals as dead letters (codes and field names, never values), the
accounting of disclosures with its audit entry, and the dirty marks: cleared when the patient is
done and unchanged since the claim, deferred with backoff when a call failed for a passing reason,
and sent to dead letters after too many rounds, so every record ends accepted or explained.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import orjson
from sqlalchemy import Connection, bindparam, delete, select, update

from telecrm.domain.fields import FIELDS
from telecrm.security.audit import AuditEntry, append_audit
from telecrm.store.upsert import upsert
from telecrm.sync.mapping import Mapping
from telecrm.sync.planner import DesiredRecord
from telecrm.sync.tables import disclosures, sync_dead_letters, sync_dirty, sync_records

RECORD_COLUMNS = ("patient_key", "crm_id", "accepted_hash", "accepted_us", "state", "code")


@dataclass
class Outcomes:
    desired: list[DesiredRecord] = field(default_factory=list)
    erased: set[str] = field(default_factory=set)
    deferred: set[str] = field(default_factory=set)
    failure_codes: dict[str, str] = field(default_factory=dict)  # patient -> last transient code
    _accepted: dict[tuple[str, str], tuple[DesiredRecord, str | None]] = field(default_factory=dict)
    _unlinked: set[tuple[str, str]] = field(default_factory=set)
    _rejected: list[tuple[DesiredRecord, str, str]] = field(default_factory=list)
    _refused_after_sending: list[DesiredRecord] = field(default_factory=list)
    _missing: list[DesiredRecord] = field(default_factory=list)
    _converted: list[tuple[str, str, bool, str | None]] = field(default_factory=list)
    _archived: list[tuple[str, str, str]] = field(default_factory=list)

    def accept(self, d: DesiredRecord, crm_id: str | None, *, pending_links: bool) -> None:
        self._accepted[(d.object, d.key)] = (d, crm_id)
        if pending_links:
            self._unlinked.add((d.object, d.key))

    def linked(self, d: DesiredRecord) -> None:
        self._unlinked.discard((d.object, d.key))

    def blocked(self, d: DesiredRecord) -> None:
        """A record that cannot be written yet (what it points to is not in the CRM): later."""
        self.deferred.add(d.patient_key)
        self.failure_codes.setdefault(d.patient_key, "DEPENDENCY_NOT_IN_CRM")

    def reject(self, d: DesiredRecord, code: str, detail: str, *, sent: bool = True) -> None:
        """A record the CRM refused (`sent`: its values reached the CRM, which answered no) or
        that telecrm kept back itself (`sent=False`, e.g. PHI for a destination without a BAA)."""
        self._rejected.append((d, code, detail))
        if sent:
            self._refused_after_sending.append(d)

    def missing(self, d: DesiredRecord) -> None:
        self._missing.append(d)

    def converted(self, lead_object: str, key: str, *, ok: bool, code: str | None) -> None:
        self._converted.append((lead_object, key, ok, code))

    def archived(self, obj: str, key: str, patient_key: str) -> None:
        self._archived.append((obj, key, patient_key))

    def crm_id(self, ref: tuple[str, str]) -> str | None:
        hit = self._accepted.get(ref)
        return None if hit is None else hit[1]


def commit_outcomes(
    conn: Connection,
    mapping: Mapping,
    out: Outcomes,
    *,
    now_us: int,
    owner: str,
    claims: dict[str, tuple[int, int]],  # patient -> (version claimed, attempts so far)
    deferred: set[str],
    retry_in_us: Callable[[int], int],
    max_rounds: int,
) -> None:
    dest = mapping.destination
    deferred = deferred | out.deferred
    rows: dict[tuple[str, str], dict[str, Any]] = {}

    def row(obj: str, key: str, patient_key: str, **values: Any) -> None:
        rows[(obj, key)] = {
            "destination": dest,
            "object": obj,
            "record_key": key,
            "patient_key": patient_key,
            "crm_id": None,
            "accepted_hash": None,
            "accepted_us": now_us,
            "state": "accepted",
            "code": None,
            **values,
        }

    for (obj, key), (d, crm_id) in out._accepted.items():
        linked = (obj, key) not in out._unlinked
        if not linked:
            deferred.add(d.patient_key)  # written, not yet linked: write and link again later
        row(obj, key, d.patient_key, crm_id=crm_id, accepted_hash=d.digest if linked else None)
    for d, code, _detail in out._rejected:
        row(
            d.object, d.key, d.patient_key, accepted_hash=d.digest, state="rejected", code=code[:64]
        )
    for d in out._missing:
        row(d.object, d.key, d.patient_key, accepted_hash=d.digest, state="missing")
    for obj, key, patient_key in out._archived:
        row(obj, key, patient_key, state="archived")
    upsert(
        conn,
        sync_records,
        list(rows.values()),
        ["destination", "object", "record_key"],
        RECORD_COLUMNS,
    )
    for obj, key, ok, conversion_code in out._converted:
        values: dict[str, Any] = {
            "state": "converted",
            "code": None if ok else (conversion_code or "")[:64],
        }
        conn.execute(
            update(sync_records)
            .where(
                sync_records.c.destination == dest,
                sync_records.c.object == obj,
                sync_records.c.record_key == key,
            )
            .values(**values)
        )

    dead = [(d, code, detail) for d, code, detail in out._rejected]
    given_up = _give_up(out, claims, deferred, max_rounds)
    dead += given_up
    _dead_letters(conn, dest, dead, now_us)
    _resolve(conn, dest, set(out._accepted), list(claims), now_us)
    _disclose(conn, mapping, out, now_us)

    given_up_patients = {d.patient_key for d, _, _ in given_up}
    done: list[dict[str, Any]] = []
    for patient, (version, attempts) in claims.items():
        if patient in deferred and patient not in given_up_patients:
            conn.execute(
                update(sync_dirty)
                .where(*and_mine(patient, dest, owner))
                .values(
                    attempts=attempts + 1,
                    not_before_us=now_us + retry_in_us(attempts),
                    lease_until_us=0,
                    lease_owner=None,
                )
            )
        else:
            done.append({"p": patient, "v": version})
    if done:  # one statement, many rows: a round of 10,000 patients is one round trip
        conn.execute(
            delete(sync_dirty).where(
                sync_dirty.c.destination == dest,
                sync_dirty.c.patient_key == bindparam("p"),
                sync_dirty.c.version == bindparam("v"),
                sync_dirty.c.lease_owner == owner,
            ),
            done,
        )
    # Whatever is left of those was marked again while we pushed: release it for the next round.
    keys = [row["p"] for row in done]
    for start in range(0, len(keys), 500):
        conn.execute(
            update(sync_dirty)
            .where(
                sync_dirty.c.destination == dest,
                sync_dirty.c.patient_key.in_(keys[start : start + 500]),
                sync_dirty.c.lease_owner == owner,
            )
            .values(lease_until_us=0, lease_owner=None)
        )


def and_mine(patient: str, dest: str, owner: str) -> tuple[Any, ...]:
    return (
        sync_dirty.c.destination == dest,
        sync_dirty.c.patient_key == patient,
        sync_dirty.c.lease_owner == owner,
    )


def _give_up(
    out: Outcomes, claims: dict[str, tuple[int, int]], deferred: set[str], max_rounds: int
) -> list[tuple[DesiredRecord, str, str]]:
    tired = {p for p in deferred if p in claims and claims[p][1] + 1 >= max_rounds}
    return [
        (
            d,
            "GAVE_UP",
            f"still failing after {max_rounds} rounds (last: {out.failure_codes.get(d.patient_key, 'transient')})",
        )
        for d in out.desired
        if d.patient_key in tired and (d.object, d.key) not in out._accepted
    ]


def _dead_letters(
    conn: Connection, dest: str, dead: list[tuple[DesiredRecord, str, str]], now_us: int
) -> None:
    for d, code, detail in dead:
        existing = conn.execute(
            select(sync_dead_letters.c.id, sync_dead_letters.c.attempts).where(
                sync_dead_letters.c.destination == dest,
                sync_dead_letters.c.object == d.object,
                sync_dead_letters.c.record_key == d.key,
                sync_dead_letters.c.status == "open",
            )
        ).first()
        if existing is not None:
            conn.execute(
                update(sync_dead_letters)
                .where(sync_dead_letters.c.id == existing.id)
                .values(
                    code=code[:64],
                    detail=detail[:500],
                    attempts=existing.attempts + 1,
                    last_failed_us=now_us,
                )
            )
        else:
            conn.execute(
                sync_dead_letters.insert().values(
                    destination=dest,
                    object=d.object,
                    record_key=d.key,
                    patient_key=d.patient_key,
                    code=code[:64],
                    detail=detail[:500],
                    attempts=1,
                    first_failed_us=now_us,
                    last_failed_us=now_us,
                    status="open",
                )
            )
        if code == "GAVE_UP":
            conn.execute(
                delete(sync_dirty).where(
                    sync_dirty.c.destination == dest, sync_dirty.c.patient_key == d.patient_key
                )
            )


def _resolve(
    conn: Connection, dest: str, accepted: set[tuple[str, str]], patients: list[str], now_us: int
) -> None:
    """Dead letters of records the CRM has now accepted are resolved (one query per 500 patients)."""
    ids = []
    for start in range(0, len(patients), 500):
        for letter in conn.execute(
            select(
                sync_dead_letters.c.id, sync_dead_letters.c.object, sync_dead_letters.c.record_key
            ).where(
                sync_dead_letters.c.destination == dest,
                sync_dead_letters.c.patient_key.in_(patients[start : start + 500]),
                sync_dead_letters.c.status.in_(("open", "retried")),
            )
        ):
            if (letter.object, letter.record_key) in accepted:
                ids.append(letter.id)
    if ids:
        conn.execute(
            update(sync_dead_letters)
            .where(sync_dead_letters.c.id.in_(ids))
            .values(status="resolved", last_failed_us=now_us)
        )


def _disclose(conn: Connection, mapping: Mapping, out: Outcomes, now_us: int) -> None:
    rows = []
    patients: set[str] = set()
    fields: set[str] = set()
    # A record the CRM refused was still sent to it: its values were disclosed all the same.
    sent = [(d, "crm sync") for d, _crm_id in out._accepted.values()]
    sent += [(d, "crm sync, refused by the CRM") for d in out._refused_after_sending]
    for d, purpose in sent:
        rows.append(
            {
                "at_us": now_us,
                "destination": mapping.destination,
                "patient_key": d.patient_key,
                "object": d.object,
                "record_key": d.key,
                "fields": orjson.dumps(list(d.fields)).decode(),
                "phi": any(FIELDS[f].is_phi for f in d.fields),
                "purpose": purpose,
            }
        )
        if d.fields:
            patients.add(d.patient_key)
            fields.update(d.fields)
    if rows:
        conn.execute(disclosures.insert(), rows)
    if patients:
        append_audit(
            conn,
            [
                AuditEntry(
                    actor=f"sync:{mapping.destination}",
                    action="disclose",
                    record_type="profile",
                    record_ids=sorted(patients),
                    fields=sorted(fields),
                    purpose=f"crm sync to {mapping.destination}",
                )
            ],
            at_us=now_us,
        )
