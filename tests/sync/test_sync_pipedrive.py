"""Syncing to Pipedrive end to end (store, worker, connector, sandbox over HTTP): activities and
notes are never duplicated, even when a crash loses every id the sync store had learnt."""

from __future__ import annotations

from sqlalchemy import select

from telecrm.bootstrap import Runtime
from telecrm.domain.clock import FrozenClock, to_micros
from telecrm.profiles.tables import profiles
from telecrm.sync.planner import mark_dirty
from telecrm.sync.worker import forget_destination
from tests.sync.harness import pipedrive_harness
from tests.sync.test_conformance import POPULATION


def test_records_created_before_a_crash_that_lost_their_ids_are_not_duplicated(
    runtime: Runtime, later: FrozenClock
) -> None:
    crm = pipedrive_harness(runtime, later)
    crm.provision()
    crm.feed(POPULATION)
    crm.sync()
    held = {o: len(crm.sandbox.records(o)) for o in ("persons", "deals", "activities", "notes")}
    assert held["activities"] > 0 and held["notes"] > 0
    with runtime.engine.begin() as conn:  # as if the worker died before its commit
        forget_destination(conn, crm.mapping.destination)
        keys = [k for (k,) in conn.execute(select(profiles.c.patient_key))]
        mark_dirty(conn, [crm.mapping.destination], keys, to_micros(later.now()))
    crm.sandbox.stats.requests.clear()
    report = crm.sync()  # a new process: a new connector that remembers nothing
    assert {o: len(crm.sandbox.records(o)) for o in held} == held
    agreement = crm.agreement()
    assert agreement.ok and not agreement.duplicated, agreement.summary()
    sent = crm.sandbox.stats.requests
    assert sent.get("POST /api/v2/activities", 0) == 0 and sent.get("POST /api/v1/notes", 0) == 0
    assert sent.get("GET /api/v2/activities", 0) >= 1 and sent.get("GET /api/v1/notes", 0) >= 1
    assert report.written == agreement.expected


def test_a_deal_is_linked_to_its_person_without_a_patch_of_its_own(
    runtime: Runtime, later: FrozenClock
) -> None:
    crm = pipedrive_harness(runtime, later)
    crm.provision()
    crm.feed(POPULATION)
    crm.sync()
    assert crm.agreement().ok  # which checks each deal's person_id names its patient
    deals = crm.sandbox.records("deals")
    patches = sum(
        n for k, n in crm.sandbox.stats.requests.items() if k.startswith("PATCH /api/v2/deals/")
    )
    assert deals and all(d["person_id"] for d in deals) and patches == 0
