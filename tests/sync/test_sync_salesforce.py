"""Profiles to Salesforce end to end, over HTTP to the sandbox, on SQLite and PostgreSQL.

Leads while patients are prospects, converted (not duplicated) into Account + Contact when they
become patients, opportunities per consultation, cases per ticket; 403 REQUEST_LIMIT_EXCEEDED
handled as Salesforce's limit signal.
"""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import func, select

from telecrm.bootstrap import Runtime
from telecrm.domain.clock import FrozenClock
from telecrm.sandbox.faults import Faults
from telecrm.sync.tables import rate_budgets, sync_dead_letters, sync_dirty, sync_records
from tests.support.builders import customer_journey, event
from tests.sync.conftest import SIMULATED
from tests.sync.harness import SyncHarness, salesforce_harness


@pytest.fixture
def sf(runtime: Runtime, later: FrozenClock) -> SyncHarness:
    h = salesforce_harness(runtime, later)
    h.provision()
    return h


def test_a_backfill_puts_every_record_in_salesforce_once(sf: SyncHarness) -> None:
    sf.feed(SIMULATED)
    report = sf.sync()
    agreement = sf.agreement()
    assert agreement.ok, agreement.summary()
    assert report.rejected == 0 and report.written == agreement.expected
    assert len(sf.records("Account")) == len(sf.records("Contact")) > 0


def test_a_lead_that_becomes_a_patient_is_converted_not_duplicated(
    sf: SyncHarness, later: FrozenClock
) -> None:
    start = later.now() - timedelta(days=6)
    journey = customer_journey("P-1", start)
    sf.feed(journey[:3])  # registered, questionnaire, consultation submitted: a prospect
    sf.sync()
    (lead,) = sf.records("Lead")
    assert lead["Telecrm_Patient_Id__c"] == "P-1" and not sf.records("Contact")
    sf.feed(journey[3:])  # prescribed and paid: a patient now
    report = sf.sync()
    assert report.converted == 1
    (lead,) = sf.records("Lead")
    (contact,) = sf.records("Contact")
    (account,) = sf.records("Account")
    assert lead["IsConverted"] is True and lead["ConvertedContactId"] == contact["Id"]
    assert contact["Telecrm_Patient_Id__c"] == "P-1" and contact["AccountId"] == account["Id"]
    (opportunity,) = sf.records("Opportunity")
    assert opportunity["StageName"] == "Closed Won" and opportunity["AccountId"] == account["Id"]
    assert sf.agreement().ok
    assert sf.sync().calls == 0


def test_request_limit_exceeded_pauses_the_destination_and_nothing_is_lost(
    sf: SyncHarness, later: FrozenClock
) -> None:
    sf.feed(SIMULATED)
    sf.sandbox.faults.set(Faults(storm_requests=2))
    first = sf.sync()
    assert first.deferred > 0
    with sf.runtime.engine.connect() as conn:
        paused = conn.execute(select(rate_budgets.c.paused_until_us)).scalar_one()
    assert paused > 0
    for _ in range(10):
        later.advance(timedelta(hours=1))
        sf.sync()
    assert sf.agreement().ok
    with sf.runtime.engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(sync_dirty)).scalar_one() == 0


def test_faults_end_with_salesforce_equal_to_the_source(
    sf: SyncHarness, later: FrozenClock
) -> None:
    sf.feed(SIMULATED)
    sf.sandbox.faults.set(Faults(error_rate=0.2, drop_rate=0.1, seed=9))
    for _ in range(20):
        sf.sync()
        later.advance(timedelta(minutes=5))
    agreement = sf.agreement()
    assert agreement.ok, agreement.summary()
    with sf.runtime.engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(sync_dead_letters)).scalar_one() == 0


def test_a_ticket_becomes_a_case_on_the_patients_contact(
    sf: SyncHarness, later: FrozenClock
) -> None:
    start = later.now() - timedelta(days=6)
    sf.feed(
        [
            *customer_journey("P-2", start),
            event(
                "support_ticket.created",
                "P-2",
                start + timedelta(days=5),
                {"ticket_id": "t-9", "category": "shipping", "priority": "high"},
            ),
        ]
    )
    sf.sync()
    (case,) = sf.records("Case")
    (contact,) = sf.records("Contact")
    assert case["ContactId"] == contact["Id"] and case["Priority"] == "High"
    with sf.runtime.engine.connect() as conn:
        states = dict(conn.execute(select(sync_records.c.object, sync_records.c.state)).all())
    assert states == {
        "account": "accepted",
        "contact": "accepted",
        "opportunity": "accepted",
        "case": "accepted",
    }
