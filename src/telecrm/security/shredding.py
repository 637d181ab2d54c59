"""Crypto-shredding: a salt per patient, so an erasure can make their event payloads unreadable.

The event log is append-only and a rebuild folds it from the start, so erasure cannot delete or
rewrite events. Instead every payload of a patient is sealed under a key derived from the data
key and that patient's random salt (envelope format 2). Erasure deletes the salt: the payloads
stay in the log, bytes without a key. What stays readable is what never held a value: the event
id, type, time and the opaque patient key, and the `patient.deleted` event itself, which is
sealed under the shared key so every rebuild erases again.

Readers join `patient_salts` (`with_salts`) and open payloads with `open_payload`, which answers
None for a shredded one; each reader then treats that event as absent.
"""

from __future__ import annotations

import os
from collections.abc import Collection, Iterable
from typing import Any

import orjson
from sqlalchemy import Connection, Select, bindparam, delete, select, update

from telecrm.security.envelope import SALT_BYTES, FieldCipher
from telecrm.security.errors import Shredded
from telecrm.security.tables import patient_salts, shredded_patients
from telecrm.store.upsert import insert_ignoring_conflicts

# Sealed under the shared data key, never a patient's: a rebuild must still read the erasure.
UNSALTED_TYPES = frozenset({"patient.deleted"})
IN_CHUNK = 500

_SALTS_OF = select(patient_salts.c.patient_key, patient_salts.c.salt).where(
    patient_salts.c.patient_key.in_(bindparam("keys", expanding=True))
)


def with_salts(query: Select[Any]) -> Select[Any]:
    """``query`` over ``events`` plus each row's patient salt as ``salt`` (None once shredded)."""
    from telecrm.ingest.tables import events  # the log is ingest's table; no import cycle

    return query.add_columns(patient_salts.c.salt).outerjoin(
        patient_salts, patient_salts.c.patient_key == events.c.patient_key
    )


def open_payload(cipher: FieldCipher, row: Any) -> dict[str, Any] | None:
    """An event row's decrypted data, or None if its patient was erased (the salt is gone)."""
    try:
        raw = cipher.decrypt(row.payload, record_id=row.event_id, field="data", salt=row.salt)
    except Shredded:
        return None
    data: dict[str, Any] = orjson.loads(raw)
    return data


def salts_of(conn: Connection, keys: Iterable[str]) -> dict[str, bytes]:
    """The salts that exist for ``keys`` (an erased patient's key has none)."""
    wanted = sorted(set(keys))
    found: dict[str, bytes] = {}
    for start in range(0, len(wanted), IN_CHUNK):
        part = wanted[start : start + IN_CHUNK]
        found.update((k, bytes(s)) for k, s in conn.execute(_SALTS_OF, {"keys": part}))
    return found


def salts_for(conn: Connection, keys: Collection[str], *, now_us: int) -> dict[str, bytes]:
    """A salt for every key, creating the missing ones in the caller's transaction.

    A concurrent writer may create the same key's salt first: the insert then does nothing and
    the re-read returns the winner's, so one patient never ends up with two.
    """
    found = salts_of(conn, keys)
    missing = [k for k in keys if k not in found]
    if missing:
        insert_ignoring_conflicts(
            conn,
            patient_salts,
            [
                {"patient_key": k, "salt": os.urandom(SALT_BYTES), "created_us": now_us}
                for k in sorted(set(missing))
            ],
            ["patient_key"],
        )
        found.update(salts_of(conn, missing))
    return found


def seal_payloads(
    conn: Connection, cipher: FieldCipher, rows: list[dict[str, Any]], *, now_us: int
) -> None:
    """Replace each event row's plaintext ``payload`` by its sealed token, in place."""
    keyed = {r["patient_key"] for r in rows if r["type"] not in UNSALTED_TYPES}
    salts = salts_for(conn, keyed, now_us=now_us) if keyed else {}
    for r in rows:
        salt = None if r["type"] in UNSALTED_TYPES else salts[r["patient_key"]]
        r["payload"] = cipher.encrypt(
            r["payload"], record_id=r["event_id"], field="data", salt=salt
        )


def shred(conn: Connection, patient_keys: Collection[str], *, now_us: int) -> int:
    """Destroy the salts of ``patient_keys`` (a patient and their linked visitors).

    Also clears the other values sealed for them outside the profile: the variables kept with
    their messages and the provider of their survey answers. Returns the salts destroyed.
    """
    from telecrm.messaging.tables import messages, nps_responses

    keys = sorted(set(patient_keys))
    destroyed = 0
    for start in range(0, len(keys), IN_CHUNK):
        part = keys[start : start + IN_CHUNK]
        result = conn.execute(delete(patient_salts).where(patient_salts.c.patient_key.in_(part)))
        destroyed += int(result.rowcount or 0)
        conn.execute(
            update(messages).where(messages.c.patient_key.in_(part)).values(context_sealed=None)
        )
        conn.execute(
            update(nps_responses)
            .where(nps_responses.c.patient_key.in_(part))
            .values(provider_sealed=None)
        )
    insert_ignoring_conflicts(
        conn,
        shredded_patients,
        [{"patient_key": k, "shredded_us": now_us} for k in keys],
        ["patient_key"],
    )
    return destroyed


def reseal_legacy(conn: Connection, cipher: FieldCipher, patient_keys: Collection[str]) -> int:
    """Shred payloads stored before per-patient salts (format 1) for ``patient_keys``.

    Each is re-sealed under a random salt that is never stored: the row keeps its place in the
    log, the value is gone like a salted one. `patient.deleted` events are left as they are.
    """
    from telecrm.ingest.tables import events

    keys = sorted(set(patient_keys))
    resealed = 0
    for start in range(0, len(keys), IN_CHUNK):
        rows = conn.execute(
            select(events.c.seq, events.c.event_id, events.c.payload).where(
                events.c.patient_key.in_(keys[start : start + IN_CHUNK]),
                events.c.type.not_in(UNSALTED_TYPES),
            )
        ).all()
        for r in rows:
            if bytes(r.payload[:1]) == b"\x02":
                continue
            token = cipher.encrypt(
                b"null", record_id=r.event_id, field="data", salt=os.urandom(SALT_BYTES)
            )
            conn.execute(update(events).where(events.c.seq == r.seq).values(payload=token))
            resealed += 1
    return resealed
