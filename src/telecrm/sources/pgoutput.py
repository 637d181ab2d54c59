"""A decoder for PostgreSQL's `pgoutput` logical-replication messages (protocol version 1).

Only what change capture needs: Relation (a table's id, name and column names), Insert, Update
and Delete with the tuple's columns as text, Begin and Commit. The message format is
PostgreSQL's "Logical Replication Message Formats" (protocol-logicalrep-message-formats); values
arrive in text form and are used only to find the row's key, never kept or logged.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field


class PgOutputError(ValueError):
    """A message this decoder does not understand (its bytes are never echoed)."""


@dataclass(frozen=True, slots=True)
class Relation:
    relation_id: int
    namespace: str
    name: str
    columns: tuple[str, ...]

    @property
    def qualified(self) -> str:
        return f"{self.namespace}.{self.name}"


@dataclass(frozen=True, slots=True)
class RowChange:
    kind: str  # "insert", "update", "delete"
    relation_id: int
    values: dict[str, str | None] = field(default_factory=dict)  # new row, or the old key


@dataclass(frozen=True, slots=True)
class Commit:
    end_lsn: int


class _Reader:
    def __init__(self, data: bytes) -> None:
        self.data, self.pos = data, 0

    def take(self, n: int) -> bytes:
        if self.pos + n > len(self.data):
            raise PgOutputError("a pgoutput message ended early")
        out = self.data[self.pos : self.pos + n]
        self.pos += n
        return out

    def byte(self) -> bytes:
        return self.take(1)

    def int8(self) -> int:
        return int(self.take(1)[0])

    def int16(self) -> int:
        return int(struct.unpack(">h", self.take(2))[0])

    def int32(self) -> int:
        return int(struct.unpack(">i", self.take(4))[0])

    def int64(self) -> int:
        return int(struct.unpack(">q", self.take(8))[0])

    def string(self) -> str:
        end = self.data.index(b"\x00", self.pos)
        out = self.data[self.pos : end].decode("utf-8")
        self.pos = end + 1
        return out


def _tuple(r: _Reader, relation: Relation | None) -> dict[str, str | None]:
    count = r.int16()
    values: dict[str, str | None] = {}
    for i in range(count):
        kind = r.byte()
        name = relation.columns[i] if relation is not None and i < len(relation.columns) else str(i)
        if kind == b"n":
            values[name] = None
        elif kind == b"u":
            continue  # an unchanged TOASTed value: not sent, not needed to find the key
        elif kind in (b"t", b"b"):
            raw = r.take(r.int32())
            values[name] = raw.decode("utf-8", errors="replace") if kind == b"t" else raw.hex()
        else:
            raise PgOutputError("unknown tuple column kind")
    return values


def decode(data: bytes, relations: dict[int, Relation]) -> Relation | RowChange | Commit | None:
    """One message; Relation messages are also recorded in `relations` (they precede the first
    change of a table in each session)."""
    r = _Reader(bytes(data))
    tag = r.byte()
    if tag == b"R":
        rel_id = r.int32()
        namespace, name = r.string(), r.string()
        r.int8()  # replica identity setting
        columns: list[str] = []
        for _ in range(r.int16()):
            r.int8()  # flags (part of the key)
            columns.append(r.string())
            r.int32()  # type oid
            r.int32()  # type modifier
        relation = Relation(rel_id, namespace or "public", name, tuple(columns))
        relations[rel_id] = relation
        return relation
    if tag == b"I":
        rel_id = r.int32()
        if r.byte() != b"N":
            raise PgOutputError("an insert without its new tuple")
        return RowChange("insert", rel_id, _tuple(r, relations.get(rel_id)))
    if tag == b"U":
        rel_id = r.int32()
        marker = r.byte()
        if marker in (b"K", b"O"):
            _tuple(r, relations.get(rel_id))  # the old key or row: the new tuple names the row
            marker = r.byte()
        if marker != b"N":
            raise PgOutputError("an update without its new tuple")
        return RowChange("update", rel_id, _tuple(r, relations.get(rel_id)))
    if tag == b"D":
        rel_id = r.int32()
        if r.byte() not in (b"K", b"O"):
            raise PgOutputError("a delete without its old key")
        return RowChange("delete", rel_id, _tuple(r, relations.get(rel_id)))
    if tag == b"C":
        r.int8()  # flags
        r.int64()  # commit lsn
        return Commit(r.int64())
    if tag in (b"B", b"O", b"Y", b"T", b"M"):
        return None  # begin, origin, type, truncate, message: nothing to capture
    raise PgOutputError("unknown pgoutput message")
