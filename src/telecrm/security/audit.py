"""The audit log: an append-only, hash-chained record of every PHI read, write and disclosure.

Row n stores ``hash = sha256(prev_hash || canonical JSON of row n)`` and the hash of row n-1 as
its ``prev_hash``; row 1 chains to 64 zeros. Editing or deleting a row breaks the chain from
there on, and the one-row ``audit_head`` (last seq and hash, written in the same transaction as
the rows) catches the one edit the chain alone cannot: deleting the newest rows. Entries carry
opaque ids and catalog field names, never PHI values (research/hipaa.md §8.3).

An insider who can write to the database could still rebuild the whole chain and the head;
catching that needs the head hash signed or copied outside the database (a checkpoint).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import orjson
from sqlalchemy import Connection, Row, func, select, text, update
from sqlalchemy.dialects import postgresql, sqlite

from telecrm.domain.clock import from_micros
from telecrm.security.errors import AuditChainBroken, InvalidAuditEntry
from telecrm.security.tables import audit_head, audit_log

GENESIS_HASH = "0" * 64
HEAD_ID = 1

# The width of each text column, from the table itself, so PostgreSQL and SQLite refuse alike.
_TEXT_LIMITS = {
    name: int(getattr(audit_log.c[name].type, "length", 0) or 0)
    for name in ("actor", "action", "record_type", "purpose", "outcome")
}


@dataclass(frozen=True, slots=True)
class AuditEntry:
    """Who did what to which records' which fields, and why. Ids and names only, never values."""

    actor: str
    action: str  # "read" | "write" | "delete" | "disclose" | "export" | "reveal" | ...
    record_type: str
    record_ids: Sequence[str]
    fields: Sequence[str]
    purpose: str
    outcome: str = "ok"

    def __post_init__(self) -> None:
        for column, limit in _TEXT_LIMITS.items():
            value = getattr(self, column)
            if not isinstance(value, str) or not value:
                raise InvalidAuditEntry(column, "must be non-empty text")
            if limit and len(value) > limit:
                raise InvalidAuditEntry(column, f"is {len(value)} characters, the limit is {limit}")
        for column in ("record_ids", "fields"):
            values = getattr(self, column)
            if isinstance(values, str | bytes):
                raise InvalidAuditEntry(column, "must be a list of strings, not one string")
            values = tuple(values)
            if not all(isinstance(value, str) for value in values):
                raise InvalidAuditEntry(column, "must hold only strings")
            object.__setattr__(self, column, values)


def chain_hash(
    prev_hash: str,
    *,
    seq: int,
    at_us: int,
    actor: str,
    action: str,
    record_type: str,
    record_ids: Sequence[str],
    fields: Sequence[str],
    purpose: str,
    outcome: str,
) -> str:
    """A row's hash: sha256 of the previous row's hash (hex) followed by the row as JSON."""
    # Sorted keys and orjson's fixed spelling make the serialisation canonical, so anyone can
    # re-derive a hash from a row with a JSON library and sha256sum.
    canonical = orjson.dumps(
        {
            "action": action,
            "actor": actor,
            "at_us": at_us,
            "fields": fields,
            "outcome": outcome,
            "purpose": purpose,
            "record_ids": record_ids,
            "record_type": record_type,
            "seq": seq,
        },
        option=orjson.OPT_SORT_KEYS,
    )
    return hashlib.sha256(prev_hash.encode("ascii") + canonical).hexdigest()


def _lock_head(conn: Connection) -> tuple[int, str]:
    """The chain's head, locked until the caller's transaction ends; created on first use."""
    # A no-op UPDATE locks the row on PostgreSQL (as SELECT ... FOR UPDATE would) and takes the
    # write lock on SQLite before anything is read, so concurrent appenders queue here.
    lock = (
        update(audit_head)
        .where(audit_head.c.id == HEAD_ID)
        .values(last_seq=audit_head.c.last_seq)
        .returning(audit_head.c.last_seq, audit_head.c.last_hash)
    )
    head = conn.execute(lock).first()
    if head is None and conn.dialect.name == "postgresql":
        # No head we can see: perhaps another transaction is creating it right now (the very
        # first appends on a fresh database). This lock waits for that transaction to end
        # (it conflicts with the row locks of its INSERT), so what we decide next is decided
        # on committed rows. On SQLite, BEGIN IMMEDIATE already made us the only writer.
        conn.execute(text("LOCK TABLE audit_head IN SHARE ROW EXCLUSIVE MODE"))
        head = conn.execute(lock).first()
    if head is None:
        dialect_insert = postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert
        created = conn.execute(
            dialect_insert(audit_head)
            .values(id=HEAD_ID, last_seq=0, last_hash=GENESIS_HASH)
            .on_conflict_do_nothing(index_elements=[audit_head.c.id])
        ).rowcount
        if created:
            orphan = conn.execute(select(func.max(audit_log.c.seq))).scalar()
            if orphan is not None:
                # Rebuilding the head from the rows would hide a deletion of the newest rows.
                raise AuditChainBroken(
                    f"the audit head is missing while the log holds rows up to {orphan}"
                )
        head = conn.execute(lock).one()
    return int(head.last_seq), str(head.last_hash)


def append_audit(conn: Connection, entries: Sequence[AuditEntry], *, at_us: int) -> None:
    """Appends ``entries`` in the caller's transaction, so they commit or vanish with the change."""
    if not entries:
        return
    seq, prev_hash = _lock_head(conn)
    rows: list[dict[str, Any]] = []
    dumps = orjson.dumps
    for entry in entries:
        seq += 1
        record_ids, fields = list(entry.record_ids), list(entry.fields)
        row_hash = chain_hash(
            prev_hash,
            seq=seq,
            at_us=at_us,
            actor=entry.actor,
            action=entry.action,
            record_type=entry.record_type,
            record_ids=record_ids,
            fields=fields,
            purpose=entry.purpose,
            outcome=entry.outcome,
        )
        rows.append(
            {
                "seq": seq,
                "at_us": at_us,
                "actor": entry.actor,
                "action": entry.action,
                "record_type": entry.record_type,
                "record_ids": dumps(record_ids).decode(),
                "fields": dumps(fields).decode(),
                "purpose": entry.purpose,
                "outcome": entry.outcome,
                "prev_hash": prev_hash,
                "hash": row_hash,
            }
        )
        prev_hash = row_hash
    conn.execute(audit_log.insert(), rows)
    conn.execute(
        update(audit_head)
        .where(audit_head.c.id == HEAD_ID)
        .values(last_seq=seq, last_hash=prev_hash)
    )


@dataclass
class AuditVerification:
    ok: bool
    rows_checked: int
    first_broken_seq: int | None
    problem: str | None  # in plain words, naming row numbers, for `telecrm audit verify`


def _missing(expected: int, found: int, after: int) -> str:
    gap = (
        f"row {expected} is missing"
        if found == expected + 1
        else f"rows {expected} to {found - 1} are missing"
    )
    where = f"the log starts at row {found}" if after == 0 else f"gap after {after}"
    return f"{gap} ({where})"


def _recomputed_hash(row: Row[Any]) -> str | None:
    try:
        record_ids, fields = orjson.loads(row.record_ids), orjson.loads(row.fields)
    except orjson.JSONDecodeError:
        return None
    return chain_hash(
        row.prev_hash,
        seq=row.seq,
        at_us=row.at_us,
        actor=row.actor,
        action=row.action,
        record_type=row.record_type,
        record_ids=record_ids,
        fields=fields,
        purpose=row.purpose,
        outcome=row.outcome,
    )


def _row_problem(row: Row[Any], prev_seq: int, prev_hash: str) -> tuple[int, str] | None:
    """What is wrong with ``row`` given the row before it, as (first broken seq, words)."""
    if row.seq != prev_seq + 1:
        return prev_seq + 1, _missing(prev_seq + 1, row.seq, prev_seq)
    if row.prev_hash != prev_hash:
        if prev_seq == 0:
            return row.seq, "row 1 does not start from the genesis hash (inserted or replaced)"
        return row.seq, f"row {row.seq} does not chain to row {prev_seq} (inserted or reordered)"
    if _recomputed_hash(row) != row.hash:
        return row.seq, f"row {row.seq} was edited (hash mismatch)"
    return None


def _read_head(conn: Connection) -> tuple[int, str] | None:
    head = conn.execute(
        select(audit_head.c.last_seq, audit_head.c.last_hash).where(audit_head.c.id == HEAD_ID)
    ).first()
    return None if head is None else (int(head.last_seq), str(head.last_hash))


def verify_audit(
    conn: Connection,
    *,
    batch: int = 10_000,
    progress: Callable[[int], None] | None = None,
) -> AuditVerification:
    """Re-derives the chain in seq order, ``batch`` rows at a time, and checks it against the head.

    Stops at the first problem. The log may grow while this runs: rows appended after the head
    was read are left for the next run, not mistaken for forgeries.
    """
    if batch < 1:
        raise ValueError("verify_audit reads at least one row per batch")
    head = _read_head(conn)
    upper = head[0] if head is not None else None
    prev_seq, prev_hash, checked = 0, GENESIS_HASH, 0
    while True:
        query = select(audit_log).where(audit_log.c.seq > prev_seq)
        if upper is not None:
            query = query.where(audit_log.c.seq <= upper)
        rows = conn.execute(query.order_by(audit_log.c.seq).limit(batch)).all()
        for row in rows:
            checked += 1
            found = _row_problem(row, prev_seq, prev_hash)
            if found is not None:
                return AuditVerification(False, checked, found[0], found[1])
            prev_seq, prev_hash = row.seq, row.hash
        if progress is not None and rows:
            progress(checked)
        if len(rows) < batch:
            break

    if head is None:
        if checked:
            problem = (
                f"the audit head is missing while the log holds {checked} rows (it was deleted)"
            )
            return AuditVerification(False, checked, None, problem)
        return AuditVerification(True, 0, None, None)
    head_seq, head_hash = head
    if prev_seq < head_seq:
        last = f"the last row is {prev_seq}" if prev_seq else "the log is empty"
        problem = f"the newest rows were deleted: head says {head_seq}, {last}"
        return AuditVerification(False, checked, prev_seq + 1, problem)
    if prev_hash != head_hash:
        problem = f"row {head_seq} does not match the audit head (the row was replaced or the head edited)"
        return AuditVerification(False, checked, head_seq, problem)
    # Read the newest row before the head again: an honest append moves both in one
    # transaction, so only a row written outside append_audit can be past the head.
    newest = conn.execute(select(func.max(audit_log.c.seq))).scalar()
    now_head = _read_head(conn)
    if newest is not None and now_head is not None and newest > now_head[0]:
        problem = (
            f"row {now_head[0] + 1} was not written by append_audit: the head says "
            f"{now_head[0]}, the log goes to {newest} (forged rows)"
        )
        return AuditVerification(False, checked, now_head[0] + 1, problem)
    return AuditVerification(True, checked, None, None)


def _as_dict(row: Row[Any]) -> dict[str, Any]:
    return {
        "seq": row.seq,
        "at": from_micros(row.at_us).isoformat(),
        "at_us": row.at_us,
        "actor": row.actor,
        "action": row.action,
        "record_type": row.record_type,
        "record_ids": orjson.loads(row.record_ids),
        "fields": orjson.loads(row.fields),
        "purpose": row.purpose,
        "outcome": row.outcome,
        "hash": row.hash,
    }


def audit_rows(
    conn: Connection,
    *,
    record_id: str | None = None,
    limit: int = 100,
    before_seq: int | None = None,
) -> list[dict[str, Any]]:
    """The newest ``limit`` entries, optionally only those naming ``record_id``: `audit show`.

    ``before_seq`` starts below that row: the next page of the read API's keyset pagination.
    """
    if record_id is None:
        query = select(audit_log).order_by(audit_log.c.seq.desc()).limit(limit)
        if before_seq is not None:
            query = query.where(audit_log.c.seq < before_seq)
        return [_as_dict(row) for row in conn.execute(query)]
    # LIKE on the quoted id narrows the scan; the exact check after parsing removes what LIKE
    # over-matches (case-insensitive on SQLite, an id inside another id with quotes in it).
    needle = orjson.dumps(record_id).decode()
    found: list[dict[str, Any]] = []
    below: int | None = before_seq
    while len(found) < limit:
        query = select(audit_log).where(audit_log.c.record_ids.contains(needle, autoescape=True))
        if below is not None:
            query = query.where(audit_log.c.seq < below)
        rows = conn.execute(query.order_by(audit_log.c.seq.desc()).limit(limit)).all()
        for row in rows:
            entry = _as_dict(row)
            if record_id in entry["record_ids"]:
                found.append(entry)
        if len(rows) < limit:
            break
        below = rows[-1].seq
    return found[:limit]
