"""Dead letters: list, show, retry and purge the records a CRM refused or telecrm gave up on.

A retry marks the record's patient dirty again and forgets the refused digest, so the next round
sends the record whether or not its data changed (the fix may have been in the CRM or the mapping).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import Connection, delete, func, select, update

from telecrm.sync.planner import mark_dirty
from telecrm.sync.tables import sync_dead_letters, sync_records


class DeadLetterNotFound(LookupError):
    def __init__(self, letter_id: int) -> None:
        super().__init__(f"no dead letter with id {letter_id} (see `telecrm dlq list`)")


def list_letters(
    conn: Connection,
    *,
    destination: str | None = None,
    status: str | None = "open",
    limit: int = 50,
) -> list[Any]:
    query = select(sync_dead_letters).order_by(sync_dead_letters.c.id).limit(limit)
    if destination is not None:
        query = query.where(sync_dead_letters.c.destination == destination)
    if status is not None:
        query = query.where(sync_dead_letters.c.status == status)
    return list(conn.execute(query))


def count_open(conn: Connection) -> dict[str, int]:
    return {
        dest: int(n)
        for dest, n in conn.execute(
            select(sync_dead_letters.c.destination, func.count())
            .where(sync_dead_letters.c.status == "open")
            .group_by(sync_dead_letters.c.destination)
        )
    }


def get_letter(conn: Connection, letter_id: int) -> Any:
    row = conn.execute(select(sync_dead_letters).where(sync_dead_letters.c.id == letter_id)).first()
    if row is None:
        raise DeadLetterNotFound(letter_id)
    return row


def _chosen(
    conn: Connection, ids: Sequence[int], destination: str | None, *, statuses: tuple[str, ...]
) -> list[Any]:
    query = select(sync_dead_letters).where(sync_dead_letters.c.status.in_(statuses))
    if ids:
        query = query.where(sync_dead_letters.c.id.in_(list(ids)))
        rows = list(conn.execute(query))
        missing = sorted(set(ids) - {r.id for r in rows})
        if missing:
            raise DeadLetterNotFound(missing[0])
        return rows
    if destination is not None:
        query = query.where(sync_dead_letters.c.destination == destination)
    return list(conn.execute(query))


def retry_letters(
    conn: Connection, ids: Sequence[int], *, destination: str | None, now_us: int
) -> int:
    """Send these records again on the next round; returns how many letters were retried."""
    rows = _chosen(conn, ids, destination, statuses=("open",))
    for r in rows:
        conn.execute(
            update(sync_records)
            .where(
                sync_records.c.destination == r.destination,
                sync_records.c.object == r.object,
                sync_records.c.record_key == r.record_key,
            )
            .values(accepted_hash=None, state="retry", code=None)
        )
        mark_dirty(conn, [r.destination], [r.patient_key], now_us)
    if rows:
        conn.execute(
            update(sync_dead_letters)
            .where(sync_dead_letters.c.id.in_([r.id for r in rows]))
            .values(status="retried", last_failed_us=now_us)
        )
    return len(rows)


def purge_letters(conn: Connection, ids: Sequence[int], *, destination: str | None) -> int:
    """Forget dead letters (they hold codes and ids only, so deleting them loses no PHI)."""
    rows = _chosen(conn, ids, destination, statuses=("open", "retried", "resolved"))
    if rows:
        conn.execute(
            delete(sync_dead_letters).where(sync_dead_letters.c.id.in_([r.id for r in rows]))
        )
    return len(rows)
