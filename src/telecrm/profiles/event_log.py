"""Reading the event log back: decrypting payloads into domain Events, in per-patient order.

An erased patient's payloads are shredded (security/shredding.py): `decode_event` answers None
for them and the fold skips them, live and in a rebuild alike.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from sqlalchemy import Connection, bindparam, select

from telecrm.domain.clock import from_micros
from telecrm.domain.events import Event, event_from_stored
from telecrm.ingest.tables import events
from telecrm.security.envelope import FieldCipher
from telecrm.security.shredding import open_payload, with_salts

IN_CHUNK = 500

EVENT_COLUMNS = (
    events.c.seq,
    events.c.event_id,
    events.c.type,
    events.c.version,
    events.c.patient_key,
    events.c.patient_id,
    events.c.anonymous_id,
    events.c.occurred_us,
    events.c.payload,
)


def decode_event(row: Any, cipher: FieldCipher) -> Event | None:
    """The domain event of a row, or None if its patient was erased (payload shredded)."""
    data = open_payload(cipher, row)
    if data is None:
        return None
    return event_from_stored(
        event_id=row.event_id,
        type_=row.type,
        version=row.version,
        occurred_at=from_micros(row.occurred_us),
        patient_id=row.patient_id,
        anonymous_id=row.anonymous_id,
        data=data,
    )


# Built once: an expanding IN parameter keeps SQLAlchemy's compiled-statement cache warm.
_ROWS_OF = with_salts(select(*EVENT_COLUMNS)).where(
    events.c.patient_key.in_(bindparam("keys", expanding=True))
)
_NEW_ROWS_OF = _ROWS_OF.where(events.c.processed.is_(False))


def rows_for(
    conn: Connection, keys: Sequence[str], *, unprocessed_only: bool
) -> dict[str, list[Any]]:
    """Event rows per patient key, each list in (occurred_us, seq) order."""
    out: dict[str, list[Any]] = {k: [] for k in keys}
    query = _NEW_ROWS_OF if unprocessed_only else _ROWS_OF
    for start in range(0, len(keys), IN_CHUNK):
        for row in conn.execute(query, {"keys": list(keys[start : start + IN_CHUNK])}):
            out[row.patient_key].append(row)
    for rows in out.values():
        rows.sort(key=lambda r: (r.occurred_us, r.seq))
    return out


def merge_ordered(*streams: Iterable[Any]) -> list[Any]:
    merged = [row for stream in streams for row in stream]
    merged.sort(key=lambda r: (r.occurred_us, r.seq))
    return merged
