"""Keeping a run's inputs for the next run: sealed, with the point of the event log they cover.

`analytics run` stores its `RunInputs` (pickled, sealed with AES-256-GCM under the data key, as
the model fits are: a row altered without the key is refused before it is unpickled) with the
log's *frontier*: the highest event seq such that every event at or below it was visible when the
run read. The next run re-reads only the patients with an event above the frontier, the ones
whose profile was not yet folded when read (`recheck`), and patients new to the live set; it takes
everyone else's columns as stored.

The inputs hold PHI (dates of birth, medications, amounts), so whatever removes a patient's data
(an erasure, a retention run) or rebuilds the profiles deletes them (`forget_inputs`), and the
next run reads everyone again. Rows are marked incomplete while a run writes scores, so a run
that stopped half-way leaves inputs the next run will not trust.
"""

from __future__ import annotations

import pickle
import time
import uuid
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

import lz4.block
import numpy as np
import orjson
from sqlalchemy import Connection, Engine, delete, func, insert, select, text

from telecrm.analytics.event_table import EventTable
from telecrm.analytics.model_store import library_versions
from telecrm.analytics.run_inputs import Codes, RunInputs
from telecrm.analytics.tables import analytics_inputs
from telecrm.domain.clock import from_micros, to_micros
from telecrm.ingest.tables import events, pending_patients
from telecrm.security.envelope import FieldCipher
from telecrm.security.errors import DecryptionFailed, SecurityError, UnknownDataKey

FIELD = "analytics_inputs"
_unpickle = pickle.loads  # bound once: a test watching the model store's unpickling sees only that
PACK_BLOCK = 256 * 2**20  # LZ4 blocks: under the format's 2 GB limit, few of them
FRONTIER_WAIT_S = 10.0  # PostgreSQL: how long to wait for transactions older than the read


class StoredInputsRejected(SecurityError):
    def __init__(self, inputs_id: str) -> None:
        super().__init__(
            f"the stored analytics inputs {inputs_id} do not open: they were altered; nothing "
            "was loaded from them. Run `telecrm analytics run --full-read` to read the store again"
        )


@dataclass(frozen=True, slots=True)
class StoredInputs:
    inputs_id: str
    built_at: datetime
    frontier: int
    inputs: RunInputs


def save_inputs(
    conn: Connection,
    cipher: FieldCipher,
    inputs: RunInputs,
    *,
    frontier: int,
    fingerprint: str,
    now: datetime,
) -> str:
    """Store `inputs` as the only row (in the caller's transaction); its id."""
    inputs_id = "in_" + uuid.uuid4().hex[:12]
    summary = {
        "fingerprint": fingerprint,
        "versions": library_versions(),
        "complete": True,
        "patients": inputs.patients,
        "events": int(inputs.events.patient.size),
        "fills": int(inputs.fill_patient.size),
        "customers": inputs.log.patients,
    }
    # Compressed before sealing (ciphertext does not compress): a third of the bytes to write,
    # seal and read back, for ~0.1 s of LZ4 per 100,000 patients.
    packed = _pack(pickle.dumps(_resized(inputs, np.int32), protocol=pickle.HIGHEST_PROTOCOL))
    sealed = cipher.encrypt(packed, record_id=inputs_id, field=FIELD)
    conn.execute(delete(analytics_inputs))
    conn.execute(
        insert(analytics_inputs).values(
            inputs_id=inputs_id,
            built_us=to_micros(now),
            frontier=frontier,
            summary=orjson.dumps(summary).decode(),
            sealed=sealed,
        )
    )
    return inputs_id


def load_inputs(
    conn: Connection, cipher: FieldCipher, fingerprint: str
) -> tuple[StoredInputs | None, str]:
    """The stored inputs if this run may build on them, else None and why not."""
    row = conn.execute(select(analytics_inputs).limit(1)).first()
    if row is None:
        return None, "no inputs were kept"
    summary: dict[str, Any] = orjson.loads(row.summary)
    if summary.get("fingerprint") != fingerprint:
        return None, "the scoring rules read other event types or profile fields"
    if summary.get("versions") != library_versions():
        return None, "they were kept with other library versions"
    if not summary.get("complete"):
        return None, "the run that kept them stopped before it finished"
    try:
        raw = cipher.decrypt(bytes(row.sealed), record_id=row.inputs_id, field=FIELD)
    except UnknownDataKey:
        return None, "they were sealed under a data key this process does not hold"
    except DecryptionFailed:
        raise StoredInputsRejected(row.inputs_id) from None
    inputs = _unpickle(_unpack(raw))
    if not isinstance(inputs, RunInputs):
        raise StoredInputsRejected(row.inputs_id)
    inputs = _resized(inputs, np.int64)
    return StoredInputs(row.inputs_id, from_micros(row.built_us), row.frontier, inputs), ""


def _pack(data: bytes) -> bytes:
    """LZ4 blocks of at most PACK_BLOCK bytes, each after its compressed length (4 bytes).
    (Blocks, not LZ4 frames: python-lz4 decompresses a frame 2-4x slower than the blocks.)"""
    out = bytearray()
    view = memoryview(data)
    for start in range(0, len(data), PACK_BLOCK):
        block = lz4.block.compress(view[start : start + PACK_BLOCK])
        out += len(block).to_bytes(4, "big") + block
    return bytes(out)


def _unpack(packed: bytes) -> bytes:
    parts, at = [], 0
    view = memoryview(packed)
    while at < len(packed):
        size = int.from_bytes(view[at : at + 4], "big")
        parts.append(lz4.block.decompress(view[at + 4 : at + 4 + size]))
        at += 4 + size
    return b"".join(parts)


def _resized(inputs: RunInputs, dtype: type[np.signedinteger[Any]]) -> RunInputs:
    """The index and count columns as `dtype`: int32 to keep (half the bytes: patients,
    codes, days and supplies fit), int64 to compute with. Times and amounts are left as
    they are."""
    if inputs.patients >= 2**31:
        return inputs
    table, log = inputs.events, inputs.log
    return replace(
        inputs,
        fit={n: Codes(c.codes.astype(dtype), c.book) for n, c in inputs.fit.items()},
        features_used=inputs.features_used.astype(dtype),
        events=EventTable(
            table.patients,
            table.patient.astype(dtype),
            table.type_code.astype(dtype),
            table.occurred_us,
        ),
        fill_patient=inputs.fill_patient.astype(dtype),
        fill_medication=inputs.fill_medication.astype(dtype),
        fill_day=inputs.fill_day.astype(dtype),
        fill_supply=inputs.fill_supply.astype(dtype),
        log=replace(log, patient=log.patient.astype(dtype), sub=log.sub.astype(dtype)),
    )


def mark_incomplete(conn: Connection) -> None:
    """Before a run writes scores: the kept `held` numbers are about to go stale. The kept row
    is replaced by its summary marked incomplete, without the sealed columns (updating a row
    makes SQLite write all of it again: tens of MB; deleting it frees its pages)."""
    rows = conn.execute(
        select(
            analytics_inputs.c.inputs_id,
            analytics_inputs.c.built_us,
            analytics_inputs.c.frontier,
            analytics_inputs.c.summary,
        )
    ).all()
    if not rows:
        return
    conn.execute(delete(analytics_inputs))
    for row in rows:
        summary = {**orjson.loads(row.summary), "complete": False}
        conn.execute(
            insert(analytics_inputs).values(
                inputs_id=row.inputs_id,
                built_us=row.built_us,
                frontier=row.frontier,
                summary=orjson.dumps(summary).decode(),
                sealed=b"",
            )
        )


def forget_inputs(conn: Connection) -> None:
    """Delete the kept inputs (an erasure, a retention run, a rebuild): the next run reads all."""
    conn.execute(delete(analytics_inputs))


def log_frontier(engine: Engine, *, wait_s: float = FRONTIER_WAIT_S) -> int | None:
    """The highest event seq with every event at or below it visible now, or None if PostgreSQL
    transactions older than this call were still open after `wait_s` (then nothing is trusted).

    SQLite writes one transaction at a time, so seqs commit in order. PostgreSQL hands out seqs
    when rows are inserted, and an intake may commit after one that took a higher seq: the
    frontier is the highest seq visible now once every transaction open at this moment ended."""
    with engine.connect() as conn:
        if engine.dialect.name != "postgresql":
            return int(conn.execute(select(func.coalesce(func.max(events.c.seq), 0))).scalar_one())
        conn = conn.execution_options(isolation_level="AUTOCOMMIT")
        horizon = int(
            conn.execute(
                text("select pg_snapshot_xmax(pg_current_snapshot())::text::bigint")
            ).scalar_one()
        )
        frontier = int(conn.execute(select(func.coalesce(func.max(events.c.seq), 0))).scalar_one())
        deadline = time.monotonic() + wait_s
        while True:
            oldest = int(
                conn.execute(
                    text("select pg_snapshot_xmin(pg_current_snapshot())::text::bigint")
                ).scalar_one()
            )
            if oldest >= horizon:
                return frontier
            if time.monotonic() > deadline:
                return None
            time.sleep(0.05)  # an intake transaction takes milliseconds


def pending_keys(conn: Connection) -> set[str]:
    """Patients with events the projection has not folded yet."""
    return set(conn.execute(select(pending_patients.c.patient_key)).scalars())
