"""The dirty-set planner: what each CRM record should hold, digests that only move when it changes."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import Engine, select

from telecrm.domain.events import parse_event
from telecrm.domain.lifecycle import Thresholds
from telecrm.domain.profile import Profile, fold
from telecrm.sync.mapping import load_mapping
from telecrm.sync.planner import desired_records, mark_dirty
from telecrm.sync.tables import sync_dirty
from tests.support.builders import customer_journey, event, registration

START = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)
NOW = START + timedelta(days=10)
HUBSPOT = load_mapping("hubspot")
SALESFORCE = load_mapping("salesforce")


def profile_of(raw_events: list[dict[str, Any]]) -> Profile:
    events = [parse_event(e, now=NOW) for e in raw_events]
    p, _ = fold("P-1", events, NOW, Thresholds())
    return p


def by_object(records: list[Any]) -> dict[str, list[Any]]:
    out: dict[str, list[Any]] = {}
    for r in records:
        out.setdefault(r.object, []).append(r)
    return out


def test_a_paying_customer_becomes_a_contact_and_a_won_deal_in_hubspot() -> None:
    p = profile_of(customer_journey("P-1", START))
    records = by_object(desired_records(p, HUBSPOT))
    contact = records["contact"][0]
    assert contact.key == "P-1"
    assert contact.properties["telecrm_patient_id"] == "P-1"
    assert contact.properties["email"] == "p-1@example.com"  # normalised at intake
    assert contact.properties["lifecyclestage"] == "customer"
    assert contact.properties["telecrm_lifecycle_stage"] == "Active Customer"
    assert set(contact.fields) == {"email", "first_name", "last_name", "phone"}
    (deal,) = records["deal"]
    assert deal.key == "c_P-1"
    assert deal.properties["dealstage"] == "closedwon"
    assert deal.properties["amount"] == 49.0
    assert deal.properties["closedate"].startswith("2026-01-09T")
    assert deal.associations == (("contact", "P-1"),)
    assert not deal.fields  # a deal carries statuses and money, no catalog value


def test_an_open_consultation_is_an_open_deal_and_a_ticket_links_to_the_contact() -> None:
    p = profile_of(
        [
            registration("P-1", START),
            event(
                "consultation.submitted",
                "P-1",
                START + timedelta(days=1),
                {"consultation_id": "c9"},
            ),
            event(
                "support_ticket.created",
                "P-1",
                START + timedelta(days=2),
                {"ticket_id": "t1", "category": "billing", "priority": "urgent"},
            ),
        ]
    )
    records = by_object(desired_records(p, HUBSPOT))
    assert records["deal"][0].properties["dealstage"] == "appointmentscheduled"
    assert "amount" not in records["deal"][0].properties
    ticket = records["ticket"][0]
    assert ticket.properties["hs_ticket_priority"] == "HIGH"  # HubSpot has no URGENT by default
    assert ticket.properties["subject"] == "Support ticket t1 (billing)"


def test_salesforce_keeps_a_lead_until_the_patient_converts_then_account_contact_opportunity() -> (
    None
):
    prospect = profile_of(customer_journey("P-1", START)[:3])
    assert [r.object for r in desired_records(prospect, SALESFORCE)] == ["lead"]
    customer = profile_of(customer_journey("P-1", START))
    records = desired_records(customer, SALESFORCE)
    assert [r.object for r in records] == ["account", "contact", "opportunity"]
    contact = records[1]
    assert contact.properties["Account"] == {"Telecrm_Patient_Id__c": "P-1"}
    assert contact.relations == (("account", "P-1"),)
    opportunity = records[2]
    assert opportunity.properties["StageName"] == "Closed Won"
    assert opportunity.properties["CloseDate"] == "2026-01-09"


def test_the_digest_moves_only_when_what_the_crm_holds_would_change() -> None:
    journey = customer_journey("P-1", START)
    before = {r.key: r.digest for r in desired_records(profile_of(journey), HUBSPOT)}
    visit = event("session.tracked", "P-1", START + timedelta(days=5), {"page": "/home"})
    after_visit = {r.key: r.digest for r in desired_records(profile_of([*journey, visit]), HUBSPOT)}
    assert after_visit == before  # sessions are not mapped: nothing to send
    update = event("patient.updated", "P-1", START + timedelta(days=5), {"phone": "+14155550999"})
    after_update = {
        r.key: r.digest for r in desired_records(profile_of([*journey, update]), HUBSPOT)
    }
    assert after_update["P-1"] != before["P-1"]
    assert after_update["c_P-1"] == before["c_P-1"]


def test_hubspot_lifecyclestage_never_moves_backwards_even_when_the_stage_does() -> None:
    p = profile_of(customer_journey("P-1", START))
    later = NOW + timedelta(days=200)
    p, _ = fold(
        "P-1",
        [parse_event(e, now=later) for e in customer_journey("P-1", START)],
        later,
        Thresholds(),
    )
    (contact, *_rest) = desired_records(p, HUBSPOT)
    assert contact.properties["telecrm_lifecycle_stage"] == "Churned Customer"
    assert contact.properties["lifecyclestage"] == "customer"


def test_erased_and_anonymous_profiles_want_no_records() -> None:
    p = profile_of(customer_journey("P-1", START))
    p.deleted = True
    assert desired_records(p, HUBSPOT) == []
    assert desired_records(Profile("anon:v1"), HUBSPOT) == []


@pytest.fixture
def marked(engine: Engine) -> Engine:
    with engine.begin() as conn:
        mark_dirty(conn, ["hubspot", "salesforce"], ["P-1", "P-2", "anon:x"], 100)
    return engine


def test_mark_dirty_marks_each_destination_and_counts_versions(marked: Engine) -> None:
    with marked.begin() as conn:
        mark_dirty(conn, ["hubspot"], ["P-1"], 200)
        rows = conn.execute(
            select(
                sync_dirty.c.destination,
                sync_dirty.c.patient_key,
                sync_dirty.c.version,
                sync_dirty.c.marked_us,
            ).order_by(sync_dirty.c.destination, sync_dirty.c.patient_key)
        ).all()
    assert [tuple(r) for r in rows] == [
        ("hubspot", "P-1", 2, 200),
        ("hubspot", "P-2", 1, 100),
        ("salesforce", "P-1", 1, 100),
        ("salesforce", "P-2", 1, 100),
    ]
