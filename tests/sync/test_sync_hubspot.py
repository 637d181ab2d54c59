"""Profiles to HubSpot end to end, over HTTP to the sandbox, on SQLite and PostgreSQL.

The destination must end equal to the source whatever the sandbox throws at the worker: no record
lost, none duplicated, unchanged records cost no call, and no PHI in dead letters.
"""

from __future__ import annotations

import math
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from telecrm.bootstrap import Runtime
from telecrm.domain.clock import FrozenClock
from telecrm.sandbox.faults import Faults
from telecrm.sync.mapping import load_mapping
from telecrm.sync.tables import disclosures, sync_dead_letters, sync_dirty, sync_records
from tests.support.builders import CANARY_EMAIL, customer_journey, event, registration
from tests.sync.conftest import SIMULATED
from tests.sync.harness import SyncHarness, hubspot_harness


@pytest.fixture
def hub(runtime: Runtime, later: FrozenClock) -> SyncHarness:
    h = hubspot_harness(runtime, later)
    h.provision()
    return h


def counts(h: SyncHarness) -> dict[str, int]:
    return {o: len(h.sandbox.records(o)) for o in ("contacts", "deals", "tickets")}


def test_a_backfill_puts_every_record_in_hubspot_once_at_the_lower_bound_of_calls(
    hub: SyncHarness,
) -> None:
    hub.feed(SIMULATED)
    report = hub.sync()
    agreement = hub.agreement()
    assert agreement.ok, agreement.summary()
    assert agreement.expected == sum(counts(hub).values()) > 150
    held = counts(hub)
    lower = sum(math.ceil(n / 100) for n in held.values())  # upserts
    lower += math.ceil(held["deals"] / 100) + math.ceil(
        held["tickets"] / 100
    )  # association batches
    # One round per 500 patients: a round's batches are full except each object's last one.
    assert report.calls <= lower + 2 * 3
    assert report.written == agreement.expected and report.rejected == 0


def test_a_second_run_costs_zero_calls_and_a_change_costs_one_upsert(
    hub: SyncHarness, later: FrozenClock
) -> None:
    hub.feed(SIMULATED)
    hub.sync()
    with hub.runtime.engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(sync_dirty)).scalar_one() == 0
    hub.feed([])
    assert hub.sync().calls == 0
    patient = next(e["patient"]["id"] for e in SIMULATED if e["type"] == "patient.registered")
    # Ten changes to one patient before the worker runs: one upsert.
    hub.feed(
        [
            event(
                "patient.updated",
                patient,
                later.now() - timedelta(minutes=10 - i),
                {"first_name": f"Ana{chr(97 + i)}"},
            )
            for i in range(10)
        ]
    )
    report = hub.sync()
    assert (report.calls, report.written) == (1, 1)
    assert hub.agreement().ok
    (contact,) = [
        r
        for r in hub.sandbox.records("contacts")
        if r["properties"]["telecrm_patient_id"] == patient
    ]
    assert contact["properties"]["firstname"] == "Anaj"


def test_faults_end_with_the_crm_equal_to_the_source(hub: SyncHarness) -> None:
    hub.feed(SIMULATED)
    hub.sandbox.faults.set(Faults(error_rate=0.2, drop_rate=0.1, storm_requests=3, seed=4))
    for _ in range(20):  # deferred patients come back after their backoff
        hub.sync()
        hub.clock.advance(timedelta(minutes=5))
    agreement = hub.agreement()
    assert agreement.ok, agreement.summary()
    assert not agreement.duplicated
    with hub.runtime.engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(sync_dead_letters)).scalar_one() == 0
        assert conn.execute(select(func.count()).select_from(sync_dirty)).scalar_one() == 0
    assert hub.sandbox.stats.rate_limited >= 3


def test_a_record_the_crm_refuses_goes_to_dead_letters_without_phi_and_is_retried_when_fixed(
    runtime: Runtime, later: FrozenClock
) -> None:
    original = Path(load_mapping("hubspot").path).read_text()
    broken = load_mapping(
        "hubspot-broken.yaml",
        text=original.replace(
            "      telecrm_churn_risk: {from: churn_risk}",
            "      telecrm_churn_risk: {from: churn_risk}\n      telecrm_not_provisioned: {from: stage}",
        ),
    )
    h = hubspot_harness(runtime, later, broken)
    h.provision()
    h.feed([registration("P-1", later.now() - timedelta(days=2), data={"email": CANARY_EMAIL})])
    report = h.sync()
    assert report.rejected == 1 and report.written == 0
    with runtime.engine.connect() as conn:
        letter = conn.execute(select(sync_dead_letters)).one()
    assert (letter.object, letter.record_key, letter.status) == ("contact", "P-1", "open")
    assert letter.code == "PROPERTY_DOESNT_EXIST"
    assert "telecrm_not_provisioned" in letter.detail
    assert CANARY_EMAIL not in repr(tuple(letter))
    # HubSpot answered no, but it received the record's values: that is a disclosure too.
    with runtime.engine.connect() as conn:
        told = conn.execute(select(disclosures)).all()
    assert [(r.object, r.record_key, r.purpose) for r in told] == [
        ("contact", "P-1", "crm sync, refused by the CRM")
    ]
    assert "email" in told[0].fields
    assert h.sync().calls == 0  # the same data is not sent again by itself


def test_disclosures_record_every_accepted_record_and_the_fields_it_carried(
    hub: SyncHarness, later: FrozenClock
) -> None:
    hub.feed(customer_journey("P-7", later.now() - timedelta(days=6)))
    hub.sync()
    with hub.runtime.engine.connect() as conn:
        rows = conn.execute(select(disclosures).order_by(disclosures.c.object)).all()
    assert [(r.object, r.record_key, r.phi) for r in rows] == [
        ("contact", "P-7", False),
        ("deal", "c_P-7", False),
    ]
    assert "email" in rows[0].fields


def _hubspot_contact(h: SyncHarness, patient: str) -> dict[str, Any]:
    return next(
        r for r in h.sandbox.records("contacts") if r["properties"]["telecrm_patient_id"] == patient
    )


def test_deals_are_associated_with_their_contact_and_orders_close_them(
    hub: SyncHarness, later: FrozenClock
) -> None:
    hub.feed(customer_journey("P-8", later.now() - timedelta(days=6)))
    hub.sync()
    contact = _hubspot_contact(hub, "P-8")
    (deal,) = hub.sandbox.records("deals")
    assert deal["properties"]["dealstage"] == "closedwon"
    assert float(deal["properties"]["amount"]) == 49.0
    assert hub.sandbox.associations("deals", deal["id"], "contacts") == [contact["id"]]


def test_update_only_mode_never_creates_and_reports_missing_records(
    runtime: Runtime, later: FrozenClock
) -> None:
    text = Path(load_mapping("hubspot").path).read_text().replace("mode: upsert ", "mode: update ")
    h = hubspot_harness(runtime, later, load_mapping("update.yaml", text=text))
    h.provision()
    h.feed(customer_journey("P-1", later.now() - timedelta(days=6)))
    report = h.sync()
    assert report.written == 0 and not h.sandbox.records("contacts")
    with runtime.engine.connect() as conn:
        states = {r.object: r.state for r in conn.execute(select(sync_records))}
    assert states == {"contact": "missing", "deal": "missing"}


def test_mirror_mode_archives_an_erased_patients_records(
    runtime: Runtime, later: FrozenClock
) -> None:
    text = Path(load_mapping("hubspot").path).read_text().replace("mode: upsert ", "mode: mirror ")
    h = hubspot_harness(runtime, later, load_mapping("mirror.yaml", text=text))
    h.provision()
    h.feed(customer_journey("P-1", later.now() - timedelta(days=6)))
    h.sync()
    assert len(h.sandbox.records("contacts")) == 1 and len(h.sandbox.records("deals")) == 1
    h.feed(
        [
            event(
                "patient.deleted",
                "P-1",
                later.now() - timedelta(minutes=1),
                {"reason": "erasure_request"},
            )
        ]
    )
    report = h.sync()
    assert report.archived == 2
    assert not h.sandbox.records("contacts") and not h.sandbox.records("deals")
    assert h.sync().calls == 0


def test_two_patients_with_one_email_the_second_is_refused_by_hubspot_and_dead_lettered(
    hub: SyncHarness, later: FrozenClock
) -> None:
    start = later.now() - timedelta(days=3)
    shared = {"email": "family@example.com"}
    hub.feed([registration("P-1", start, data=shared), registration("P-2", start, data=shared)])
    report = hub.sync()
    assert (report.written, report.rejected) == (1, 1)
    with hub.runtime.engine.connect() as conn:
        letter = conn.execute(select(sync_dead_letters)).one()
    assert (letter.code, letter.detail) == ("CONFLICT", "properties: email")
    assert "family@example.com" not in repr(tuple(letter))
    assert len(hub.sandbox.records("contacts")) == 1


def test_a_deal_already_linked_to_its_contact_is_not_linked_again_when_it_changes(
    hub: SyncHarness, later: FrozenClock
) -> None:
    journey = customer_journey("P-3", later.now() - timedelta(days=6))
    hub.feed(journey[:-1])  # consultation and prescription: an open deal
    hub.sync()
    worker = hub.worker()
    hub.feed(journey[-1:])  # the order closes the deal (and makes a customer of the contact)
    report = worker.drain()
    assert (report.written, report.calls) == (2, 2)
    assert not any("associat" in k for k in worker.connector.stats.by_endpoint)
    (deal,) = hub.sandbox.records("deals")
    assert deal["properties"]["dealstage"] == "closedwon"


def test_an_expired_oauth_token_is_refreshed_between_and_during_runs(
    runtime: Runtime, later: FrozenClock
) -> None:
    h = hubspot_harness(runtime, later)
    h.env = {
        "TELECRM_HUBSPOT_URL": "http://hubspot",
        "TELECRM_HUBSPOT_CLIENT_ID": "sandbox-client-id",
        "TELECRM_HUBSPOT_CLIENT_SECRET": "sandbox-client-secret",
        "TELECRM_HUBSPOT_REFRESH_TOKEN": "sandbox-refresh-token",
    }
    h.provision()
    worker = h.worker()
    h.feed([registration("P-1", later.now() - timedelta(days=1))])
    assert worker.drain().written == 1
    later.advance(timedelta(hours=2))  # HubSpot access tokens live 30 minutes
    h.feed([registration("P-2", later.now() - timedelta(minutes=5))])
    assert worker.drain().written == 1
    assert worker.connector.stats.token_calls == 2
    assert h.sandbox.stats.unauthorized == 0  # refreshed before expiry, never refused
    assert h.agreement().ok


def test_a_crm_that_never_recovers_ends_in_dead_letters_not_in_an_endless_queue(
    hub: SyncHarness, later: FrozenClock
) -> None:
    hub.feed([registration("P-1", later.now() - timedelta(days=1))])
    hub.sandbox.faults.set(Faults(error_rate=1.0))  # every call answers 5xx, for ever
    for _ in range(12):
        hub.sync()
        later.advance(timedelta(minutes=10))
    with hub.runtime.engine.connect() as conn:
        letter = conn.execute(select(sync_dead_letters)).one()
        assert conn.execute(select(func.count()).select_from(sync_dirty)).scalar_one() == 0
    assert letter.code == "GAVE_UP" and "INTERNAL_ERROR" in letter.detail
    hub.sandbox.faults.set(Faults())  # the CRM is back: an operator retries the letter
    with hub.runtime.engine.begin() as conn:
        from telecrm.sync.dead_letters import retry_letters

        assert retry_letters(conn, [letter.id], destination=None, now_us=0) == 1
    assert hub.sync().written == 1
    assert hub.agreement().ok
