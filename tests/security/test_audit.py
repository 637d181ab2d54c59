"""The audit log: appends chain, and `verify` finds every edit, deletion and forgery by row."""

from __future__ import annotations

import threading
from itertools import pairwise

import orjson
import pytest
from sqlalchemy import Engine, delete, insert, select, update

from telecrm.security.audit import (
    GENESIS_HASH,
    AuditEntry,
    append_audit,
    audit_rows,
    chain_hash,
    verify_audit,
)
from telecrm.security.errors import AuditChainBroken, InvalidAuditEntry
from telecrm.security.tables import audit_head, audit_log

T0 = 1_772_442_000_000_000  # 2026-03-02 09:00 UTC, in microseconds


def _entry(n: int, *, action: str = "read", record_ids: tuple[str, ...] | None = None):
    return AuditEntry(
        actor=f"user:{n % 3}",
        action=action,
        record_type="patient",
        record_ids=record_ids if record_ids is not None else (f"p_{n}",),
        fields=("email", "phone"),
        purpose="treatment",
    )


def _append(engine: Engine, count: int, *, at_us: int = T0, start: int = 0) -> None:
    with engine.begin() as conn:
        append_audit(conn, [_entry(start + n) for n in range(count)], at_us=at_us)


def _verify(engine: Engine, **kwargs):
    with engine.connect() as conn:
        return verify_audit(conn, **kwargs)


def _audit_rows(engine: Engine, **kwargs):
    with engine.connect() as conn:
        return audit_rows(conn, **kwargs)


def _sql(engine: Engine, statement) -> None:
    with engine.begin() as conn:
        conn.execute(statement)


def test_an_empty_log_verifies_with_no_rows(engine):
    result = _verify(engine)
    assert (result.ok, result.rows_checked, result.first_broken_seq, result.problem) == (
        True,
        0,
        None,
        None,
    )


def test_appended_entries_chain_from_the_genesis_hash_and_verify(engine):
    _append(engine, 3)
    _append(engine, 2, at_us=T0 + 1, start=3)
    with engine.connect() as conn:
        rows = conn.execute(select(audit_log).order_by(audit_log.c.seq)).all()
        head = conn.execute(select(audit_head)).one()
    assert [row.seq for row in rows] == [1, 2, 3, 4, 5]
    assert rows[0].prev_hash == GENESIS_HASH
    assert all(row.prev_hash == before.hash for before, row in pairwise(rows))
    assert (head.last_seq, head.last_hash) == (5, rows[-1].hash)
    assert _verify(engine).ok
    assert _verify(engine).rows_checked == 5


def test_the_stored_hash_is_sha256_of_the_previous_hash_and_the_canonical_row(engine):
    _append(engine, 1)
    with engine.connect() as conn:
        row = conn.execute(select(audit_log)).one()
    assert row.record_ids == '["p_0"]'
    assert row.hash == chain_hash(
        GENESIS_HASH,
        seq=1,
        at_us=T0,
        actor="user:0",
        action="read",
        record_type="patient",
        record_ids=["p_0"],
        fields=["email", "phone"],
        purpose="treatment",
        outcome="ok",
    )


def test_appending_nothing_writes_nothing(engine):
    with engine.begin() as conn:
        append_audit(conn, [], at_us=T0)
    with engine.connect() as conn:
        assert conn.execute(select(audit_head)).first() is None


def test_thousands_of_entries_in_one_call_verify_in_batches(engine):
    _append(engine, 2500)
    seen: list[int] = []
    result = _verify(engine, batch=1000, progress=seen.append)
    assert result.ok
    assert result.rows_checked == 2500
    assert seen == [1000, 2000, 2500]


@pytest.mark.parametrize(
    "change",
    [{"actor": "user:someone-else"}, {"fields": '["email"]'}, {"at_us": T0 - 1}],
)
def test_an_edited_row_is_reported_by_its_seq(engine, change):
    _append(engine, 10)
    _sql(engine, update(audit_log).where(audit_log.c.seq == 6).values(**change))
    result = _verify(engine)
    assert not result.ok
    assert result.first_broken_seq == 6
    assert result.problem == "row 6 was edited (hash mismatch)"


def test_an_edited_row_with_a_recomputed_hash_breaks_the_link_to_the_next_row(engine):
    _append(engine, 10)
    with engine.connect() as conn:
        row = conn.execute(select(audit_log).where(audit_log.c.seq == 4)).one()
    forged_hash = chain_hash(
        row.prev_hash,
        seq=4,
        at_us=row.at_us,
        actor="user:innocent",
        action=row.action,
        record_type=row.record_type,
        record_ids=orjson.loads(row.record_ids),
        fields=orjson.loads(row.fields),
        purpose=row.purpose,
        outcome=row.outcome,
    )
    _sql(
        engine,
        update(audit_log)
        .where(audit_log.c.seq == 4)
        .values(actor="user:innocent", hash=forged_hash),
    )
    result = _verify(engine)
    assert result.first_broken_seq == 5
    assert result.problem == "row 5 does not chain to row 4 (inserted or reordered)"


def test_a_deleted_middle_row_is_reported_as_a_gap(engine):
    _append(engine, 30)
    _sql(engine, delete(audit_log).where(audit_log.c.seq == 17))
    result = _verify(engine)
    assert (result.ok, result.first_broken_seq) == (False, 17)
    assert result.problem == "row 17 is missing (gap after 16)"


def test_several_deleted_rows_are_reported_as_one_gap(engine):
    _append(engine, 30)
    _sql(engine, delete(audit_log).where(audit_log.c.seq.between(17, 19)))
    assert _verify(engine).problem == "rows 17 to 19 are missing (gap after 16)"


def test_a_deleted_first_row_is_reported(engine):
    _append(engine, 5)
    _sql(engine, delete(audit_log).where(audit_log.c.seq == 1))
    result = _verify(engine)
    assert result.first_broken_seq == 1
    assert result.problem == "row 1 is missing (the log starts at row 2)"


def test_deleting_the_newest_rows_is_caught_by_the_head(engine):
    _append(engine, 120)
    _sql(engine, delete(audit_log).where(audit_log.c.seq > 100))
    result = _verify(engine)
    assert (result.ok, result.rows_checked, result.first_broken_seq) == (False, 100, 101)
    assert result.problem == "the newest rows were deleted: head says 120, the last row is 100"


def test_deleting_every_row_is_caught_by_the_head(engine):
    _append(engine, 3)
    _sql(engine, delete(audit_log))
    result = _verify(engine)
    assert result.first_broken_seq == 1
    assert result.problem == "the newest rows were deleted: head says 3, the log is empty"


def test_a_forged_row_with_a_made_up_hash_is_reported(engine):
    _append(engine, 5)
    forged = {
        "seq": 6,
        "at_us": T0,
        "actor": "user:1",
        "action": "read",
        "record_type": "patient",
        "record_ids": '["p_9"]',
        "fields": '["email"]',
        "purpose": "treatment",
        "outcome": "ok",
        "prev_hash": "f" * 64,
        "hash": "e" * 64,
    }
    _sql(engine, insert(audit_log).values(**forged))
    _sql(engine, update(audit_head).values(last_seq=6, last_hash="e" * 64))
    result = _verify(engine)
    assert result.first_broken_seq == 6
    assert result.problem == "row 6 does not chain to row 5 (inserted or reordered)"


def test_a_well_forged_row_that_skipped_the_head_is_reported(engine):
    _append(engine, 5)
    with engine.connect() as conn:
        last_hash = conn.execute(select(audit_log.c.hash).where(audit_log.c.seq == 5)).scalar()
    fields = {
        "at_us": T0,
        "actor": "user:1",
        "action": "read",
        "record_type": "patient",
        "purpose": "treatment",
        "outcome": "ok",
    }
    row_hash = chain_hash(last_hash, seq=6, record_ids=["p_9"], fields=["email"], **fields)
    _sql(
        engine,
        insert(audit_log).values(
            seq=6,
            record_ids='["p_9"]',
            fields='["email"]',
            prev_hash=last_hash,
            hash=row_hash,
            **fields,
        ),
    )
    result = _verify(engine)
    assert result.first_broken_seq == 6
    assert "row 6 was not written by append_audit" in (result.problem or "")


def test_an_edited_head_is_reported(engine):
    _append(engine, 5)
    _sql(engine, update(audit_head).values(last_hash="0" * 64))
    result = _verify(engine)
    assert result.first_broken_seq == 5
    assert "does not match the audit head" in (result.problem or "")


def test_a_deleted_head_is_reported_and_further_appends_are_refused(engine):
    _append(engine, 5)
    _sql(engine, delete(audit_head))
    result = _verify(engine)
    assert not result.ok
    assert "audit head is missing" in (result.problem or "")
    with pytest.raises(AuditChainBroken, match="rows up to 5"):
        _append(engine, 1)


def test_concurrent_appenders_extend_one_chain(engine):
    failures: list[BaseException] = []

    def other_process() -> None:
        try:
            _append(engine, 50, start=100)
        except BaseException as exc:  # a thread's error is otherwise only printed
            failures.append(exc)

    with engine.begin() as conn:
        append_audit(conn, [_entry(n) for n in range(50)], at_us=T0)
        # The other appender starts while this one holds the head, and must wait for it.
        other = threading.Thread(target=other_process)
        other.start()
    other.join(timeout=60)
    assert not other.is_alive()
    assert not failures, repr(failures[0])
    result = _verify(engine)
    assert (result.ok, result.rows_checked) == (True, 100)


def test_audit_rows_lists_the_newest_first(engine):
    _append(engine, 5)
    rows = _audit_rows(engine, limit=2)
    assert [row["seq"] for row in rows] == [5, 4]
    assert rows[0]["record_ids"] == ["p_4"]
    assert rows[0]["at"] == "2026-03-02T09:00:00+00:00"


def test_audit_rows_for_a_record_matches_its_id_exactly(engine):
    with engine.begin() as conn:
        append_audit(
            conn,
            [
                _entry(0, record_ids=("p_1",)),
                _entry(1, record_ids=("P_1",)),
                _entry(2, record_ids=("px1", "p_1x")),
                _entry(3, record_ids=("p_2", "p_1")),
                _entry(4, record_ids=('x"p_1',)),
            ],
            at_us=T0,
        )
    assert [row["seq"] for row in _audit_rows(engine, record_id="p_1")] == [4, 1]
    assert [row["seq"] for row in _audit_rows(engine, record_id="p_1", limit=1)] == [4]


def test_an_entry_with_one_string_for_its_ids_is_refused():
    with pytest.raises(InvalidAuditEntry, match="record_ids"):
        AuditEntry("user:1", "read", "patient", "p_1", ("email",), "treatment")


def test_an_entry_too_long_for_its_column_is_refused_without_echoing_it():
    actor = "CANARY" * 30
    with pytest.raises(InvalidAuditEntry, match="actor") as caught:
        AuditEntry(actor, "read", "patient", ("p_1",), ("email",), "treatment")
    assert "CANARY" not in str(caught.value)


def test_entries_keep_their_ids_as_an_immutable_tuple():
    entry = AuditEntry("user:1", "disclose", "patient", ["p_1"], ["email"], "treatment")
    assert entry.record_ids == ("p_1",)
    assert entry.fields == ("email",)
