"""Fills from the event log: every paid order dispenses a supply of the current prescription.

The simulated platform, like a DTC telehealth pharmacy, ships one supply per paid order
(`order.paid`, recurring for a subscription's renewals); the medication and its days' supply
come from the patient's latest `prescription.approved` before the order. A fill's date is the
payment date (UTC): there is no shipping event, and research/analytics.md §3.4 asks only that
the choice be stated. `refill.due` is a reminder that supply runs out, not a dispensing, so it
is not a fill. Orders before any prescription dispense nothing we can name and are skipped.

Only `prescription.approved` payloads are decrypted (the medication is PHI); an order's date
is a clear column.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import Connection, bindparam, select

from telecrm.analytics.adherence import Fill
from telecrm.domain.clock import from_micros
from telecrm.ingest.tables import events
from telecrm.security.envelope import FieldCipher
from telecrm.security.shredding import open_payload, with_salts

IN_CHUNK = 500  # patients per query: SQLite allows 32,766 bound parameters, keep lists short
FILL_EVENTS = ("prescription.approved", "order.paid")

# Prescriptions with their sealed payload (and the patient's salt to open it); paid orders need
# only their time and seq, so their payloads are not fetched at all.
_PRESCRIPTIONS = (
    with_salts(
        select(
            events.c.event_id,
            events.c.type,
            events.c.patient_key,
            events.c.occurred_us,
            events.c.seq,
            events.c.payload,
        )
    )
    .where(events.c.patient_key.in_(bindparam("keys", expanding=True)))
    .where(events.c.type == "prescription.approved")
)
_PAID = (
    select(events.c.type, events.c.patient_key, events.c.occurred_us, events.c.seq)
    .where(events.c.patient_key.in_(bindparam("keys", expanding=True)))
    .where(events.c.type == "order.paid")
)


def fills_from_rows(rows: Sequence[Any], cipher: FieldCipher) -> list[Fill]:
    """One patient's fills from their prescription and order rows (any order)."""
    current: tuple[str, int] | None = None
    fills: list[Fill] = []
    for r in sorted(rows, key=lambda r: (r.occurred_us, r.seq)):
        if r.type == "prescription.approved":
            data = open_payload(cipher, r)
            if data is None:  # shredded by an erasure
                current = None
                continue
            supply = data.get("days_supply")
            medication = data.get("medication")
            if isinstance(medication, str) and isinstance(supply, int) and supply > 0:
                current = (medication, supply)
        elif current is not None:
            fills.append(Fill(from_micros(r.occurred_us).date(), current[1], current[0]))
    return fills


def fills_for(
    conn: Connection, cipher: FieldCipher, patient_keys: Sequence[str], *, upto: int | None = None
) -> dict[str, list[Fill]]:
    """{patient key: fills in date order} for the given patients, a few queries per 500;
    `upto`: only events with a seq at or below it."""
    rows: dict[str, list[Any]] = {k: [] for k in patient_keys}
    keys = list(dict.fromkeys(patient_keys))
    queries = [_PRESCRIPTIONS, _PAID]
    if upto is not None:
        queries = [q.where(events.c.seq <= upto) for q in queries]
    for start in range(0, len(keys), IN_CHUNK):
        for query in queries:
            for row in conn.execute(query, {"keys": keys[start : start + IN_CHUNK]}):
                rows[row.patient_key].append(row)
    return {key: fills_from_rows(patient_rows, cipher) for key, patient_rows in rows.items()}
