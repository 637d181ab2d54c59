"""The pgoutput decoder on hand-built messages (PostgreSQL's logical replication format v1)."""

from __future__ import annotations

import struct

import pytest

from telecrm.sources.pgoutput import Commit, PgOutputError, Relation, RowChange, decode


def relation() -> bytes:
    cols = b"".join(
        b"\x01" + name + b"\x00" + struct.pack(">ii", 25, -1) for name in (b"id", b"status")
    )
    return (
        b"R" + struct.pack(">i", 7) + b"public\x00orders\x00" + b"d" + struct.pack(">h", 2) + cols
    )


def tuple_data(*values: bytes | None) -> bytes:
    out = struct.pack(">h", len(values))
    for v in values:
        out += b"n" if v is None else b"t" + struct.pack(">i", len(v)) + v
    return out


def test_a_relation_then_its_changes_decode_to_keys_by_column_name() -> None:
    relations: dict[int, Relation] = {}
    assert decode(relation(), relations) == Relation(7, "public", "orders", ("id", "status"))
    insert = decode(b"I" + struct.pack(">i", 7) + b"N" + tuple_data(b"ord_1", b"paid"), relations)
    assert insert == RowChange("insert", 7, {"id": "ord_1", "status": "paid"})
    update = decode(
        b"U"
        + struct.pack(">i", 7)
        + b"K"
        + tuple_data(b"ord_0", None)
        + b"N"
        + tuple_data(b"ord_1", None),
        relations,
    )
    assert update == RowChange("update", 7, {"id": "ord_1", "status": None})
    delete = decode(b"D" + struct.pack(">i", 7) + b"K" + tuple_data(b"ord_2", None), relations)
    assert delete == RowChange("delete", 7, {"id": "ord_2", "status": None})
    commit = decode(b"C\x00" + struct.pack(">qqq", 1, 0x1_0000_00A0, 5), relations)
    assert commit == Commit(0x1_0000_00A0)
    assert decode(b"B" + b"\x00" * 20, relations) is None


def test_a_truncated_or_unknown_message_is_refused_without_echoing_it() -> None:
    with pytest.raises(PgOutputError, match="ended early"):
        decode(
            b"I" + struct.pack(">i", 7) + b"N" + struct.pack(">h", 1) + b"t\x00\x00\x00\x09abc", {}
        )
    with pytest.raises(PgOutputError, match="unknown pgoutput message"):
        decode(b"Zsecret", {})
