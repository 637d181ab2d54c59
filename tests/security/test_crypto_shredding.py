"""Crypto-shredding: after an erasure no key opens the patient's event payloads (their visitor
history included), nothing telecrm shows holds their values, other patients are untouched, and
a rebuild of the projection gives what the live projection holds. Both databases."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import orjson
import pytest
from sqlalchemy import select

from telecrm.bootstrap import Runtime
from telecrm.domain.clock import FrozenClock
from telecrm.ingest.tables import events
from telecrm.profiles.rebuild import projection_digest, rebuild_projection
from telecrm.profiles.tables import profiles
from telecrm.security.erasure import AlreadyErased, ErasureRequest, request_erasure
from telecrm.security.errors import DecryptionFailed, Shredded
from telecrm.security.export import export_record
from telecrm.security.shredding import open_payload, with_salts
from telecrm.security.tables import patient_salts, shredded_patients
from tests.support.builders import (
    CANARY_CONDITION,
    CANARY_EMAIL,
    CANARY_MEDICATION,
    SignedClient,
    event,
    registration,
)

START = datetime(2026, 2, 2, 15, 0, tzinfo=UTC)
GONE, KEPT = "pat_shred_1", "pat_keep_1"
CANARY_CHANNEL = "canary_channel_9d2"  # the visitor's first touch, before they registered
KEPT_MEDICATION = "Keptmycin"


def _seed(api: SignedClient, runtime: Runtime) -> None:
    s = timedelta(hours=1)
    wire = [
        event("session.tracked", None, START, {"channel": CANARY_CHANNEL}, anonymous_id="v_shred"),
        registration(
            GONE,
            START + s,
            anonymous_id="v_shred",
            data={
                "email": CANARY_EMAIL,
                "conditions": [CANARY_CONDITION],
                "medications": [CANARY_MEDICATION],
            },
        ),
        event(
            "prescription.approved",
            GONE,
            START + 2 * s,
            {"prescription_id": "rx_g", "medication": CANARY_MEDICATION, "days_supply": 30},
        ),
        event("order.paid", GONE, START + 3 * s, {"order_id": "o_g", "amount": 49.0}),
        registration(KEPT, START + s, data={"medications": [KEPT_MEDICATION]}),
        event("order.paid", KEPT, START + 2 * s, {"order_id": "o_k", "amount": 30.0}),
    ]
    for payload in wire:
        assert api.post(payload).status_code == 202
    runtime.worker().drain()


def _erase(runtime: Runtime, clock: FrozenClock, reason: str) -> ErasureRequest:
    return request_erasure(
        runtime.engine,
        runtime.intake(),
        runtime.blind_index(),
        GONE,
        cipher=runtime.cipher(),
        reason=reason,
        actor="test",
        now=clock.now(),
    )


def _rows(runtime: Runtime, keys: list[str]) -> list:  # type: ignore[type-arg]
    with runtime.engine.connect() as conn:
        return list(
            conn.execute(
                with_salts(select(events))
                .where(events.c.patient_key.in_(keys))
                .order_by(events.c.seq)
            )
        )


def test_erasure_shreds_every_payload_of_the_patient_and_their_visitor_history(
    runtime: Runtime, api: SignedClient, clock: FrozenClock
) -> None:
    _seed(api, runtime)
    cipher = runtime.cipher()
    before = _rows(runtime, [GONE, "anon:v_shred"])
    assert before and all(r.payload[0] == 2 and open_payload(cipher, r) for r in before)
    clock.set(START + timedelta(days=3))
    done = _erase(runtime, clock, "request #12")
    runtime.worker().drain()
    assert done.keys_destroyed == 2  # the patient's key and their visitor's
    assert done.events_shredded == len(before)

    after = _rows(runtime, [GONE, "anon:v_shred"])
    erasure = [r for r in after if r.type == "patient.deleted"]
    assert len(erasure) == 1 and erasure[0].payload[0] == 1  # readable by every rebuild
    shredded = [r for r in after if r.type != "patient.deleted"]
    assert {r.event_id for r in shredded} == {r.event_id for r in before}  # the log is whole
    with runtime.engine.connect() as conn:
        other_salts = [bytes(s) for s in conn.execute(select(patient_salts.c.salt)).scalars()]
        gone_marks = set(conn.execute(select(shredded_patients.c.patient_key)).scalars())
    assert gone_marks == {GONE, "anon:v_shred"}
    assert other_salts  # KEPT's
    for r in shredded:
        assert r.salt is None and open_payload(cipher, r) is None
        with pytest.raises(Shredded):
            cipher.decrypt(r.payload, record_id=r.event_id, field="data")
        for salt in other_salts:  # no surviving salt opens it either
            with pytest.raises(DecryptionFailed):
                cipher.decrypt(r.payload, record_id=r.event_id, field="data", salt=salt)

    with runtime.engine.connect() as conn:
        record = export_record(conn, cipher, GONE)
        row = conn.execute(select(profiles).where(profiles.c.patient_key == GONE)).one()
    shown = orjson.dumps(record).decode()
    for canary in (CANARY_EMAIL, CANARY_CONDITION, CANARY_MEDICATION, CANARY_CHANNEL):
        assert canary not in shown
        assert canary not in (row.attributes or "")
    assert row.deleted and orjson.loads(row.sealed) == {}
    assert [e["type"] for e in record["events"] if e["data"] is not None] == ["patient.deleted"]
    assert len(record["events"]) == len(after)  # types and times stay

    with runtime.engine.connect() as conn:  # the other patient keeps every value
        kept = export_record(conn, cipher, KEPT)
    assert KEPT_MEDICATION in orjson.dumps(kept).decode()
    assert all(e["data"] is not None for e in kept["events"])

    with pytest.raises(AlreadyErased):
        _erase(runtime, clock, "again")


def test_a_rebuild_after_shredding_gives_the_live_projection(
    runtime: Runtime, api: SignedClient, clock: FrozenClock
) -> None:
    _seed(api, runtime)
    clock.set(START + timedelta(days=3))
    _erase(runtime, clock, "request #13")
    runtime.worker().drain()
    live = projection_digest(runtime.engine, runtime.cipher())
    rebuild_projection(runtime.engine, runtime.worker(), clock)
    assert projection_digest(runtime.engine, runtime.cipher()) == live


def test_an_event_stored_after_the_erasure_gets_a_new_key_and_the_old_stay_shredded(
    runtime: Runtime, api: SignedClient, clock: FrozenClock
) -> None:
    _seed(api, runtime)
    clock.set(START + timedelta(days=3))
    _erase(runtime, clock, "request #14")
    runtime.worker().drain()
    clock.advance(timedelta(hours=1))
    late = event("order.paid", GONE, clock.now(), {"order_id": "o_late", "amount": 12.5})
    api.now = clock.now()  # the signature's timestamp is checked against the intake's clock
    answer = api.post(late)
    assert answer.status_code == 202, answer.text
    runtime.worker().drain()
    rows = _rows(runtime, [GONE])
    readable = [r for r in rows if open_payload(runtime.cipher(), r) is not None]
    # The new salt does not open the old payloads: the token names the salt it was sealed under.
    assert [r.type for r in readable] == ["patient.deleted", "order.paid"]
    assert readable[-1].event_id == late["id"]
    with runtime.engine.connect() as conn:
        row = conn.execute(select(profiles).where(profiles.c.patient_key == GONE)).one()
    assert row.deleted  # an event after the erasure does not bring the patient back


def test_payloads_stored_before_per_patient_salts_are_shredded_too(
    runtime: Runtime, api: SignedClient, clock: FrozenClock
) -> None:
    _seed(api, runtime)
    cipher = runtime.cipher()
    order = next(r for r in _rows(runtime, [GONE]) if r.type == "order.paid")
    legacy = cipher.encrypt(
        orjson.dumps(open_payload(cipher, order)), record_id=order.event_id, field="data"
    )
    assert legacy[0] == 1  # the shared-key format every payload had before this release
    with runtime.engine.begin() as conn:
        conn.execute(events.update().where(events.c.seq == order.seq).values(payload=legacy))
    clock.set(START + timedelta(days=3))
    _erase(runtime, clock, "request #15")
    after = next(r for r in _rows(runtime, [GONE]) if r.event_id == order.event_id)
    assert after.payload[0] == 2 and open_payload(cipher, after) is None
