"""Pipedrive activities and notes through the connector: a marker instead of a searchable id, so
nothing is created twice; deals carry their person in their own body; searches have a budget."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from telecrm.connectors.base import AssociationWrite, RecordWrite, TransientFailure
from telecrm.connectors.pipedrive import PipedriveConfig, PipedriveConnector
from telecrm.sandbox.faults import Faults, sandbox_client
from tests.connectors.test_pipedrive import BASE, ID, PROPERTIES, CountingGate, Rig

TICKET = "telecrm_ticket_id"
CONSULTATION = "telecrm_consultation_id"
PERSON_OF = {ID: "P-0001"}  # what a mapping's `relation: person` gives


@pytest.fixture
def rig() -> Iterator[Rig]:
    rig = Rig()
    rig.connector.provision(PROPERTIES)
    rig.connector.write("persons", ID, [RecordWrite("P-0001", {"name": "Pat"})])
    rig.sent.clear()
    yield rig
    rig.connector.close()


def task(key: str = "T-1", **extra: Any) -> RecordWrite:
    return RecordWrite(key, {TICKET: key, "subject": f"Follow up {key}", "type": "task",
                             "due_date": "2025-09-20", "person_id": PERSON_OF, **extra})  # fmt: skip


def note(key: str = "C-1", content: str = "Consultation C-1: status submitted") -> RecordWrite:
    return RecordWrite(
        key, {CONSULTATION: key, "content": content, "deal_id": key, "person_id": PERSON_OF}
    )


def deal(key: str = "C-1") -> RecordWrite:
    return RecordWrite(key, {CONSULTATION: key, "title": f"Consultation {key}",
                             "stage_id": "submitted", "pipeline_id": "telecrm consultations",
                             "person_id": PERSON_OF})  # fmt: skip


def fresh_connector(rig: Rig) -> PipedriveConnector:
    """A new process: the same company, no id remembered."""
    client = sandbox_client(
        rig.sandbox.app, base_url=BASE, event_hooks={"request": [rig.sent.append]}
    )
    return PipedriveConnector(
        PipedriveConfig(base_url=BASE, api_token="pd-sandbox-api-token"), client,
        id_fields={"persons": ID, "deals": CONSULTATION},
    )  # fmt: skip


def test_a_task_for_a_person_we_created_costs_one_post_and_carries_its_marker(rig: Rig) -> None:
    [made] = rig.connector.write("activities", TICKET, [task()])
    assert made.outcome == "accepted" and made.created is True
    assert [(r.method, r.url.path) for r in rig.sent] == [("POST", "/api/v2/activities")]
    [stored] = rig.sandbox.records("activities")
    assert stored["note"].endswith("[telecrm:telecrm_ticket_id:T-1]")
    assert stored["person_id"] == int(rig.persons()["P-0001"]["id"]) and stored["type"] == "task"
    [again] = rig.connector.write("activities", TICKET, [task(subject="Follow up T-1 again")])
    assert again.created is False and again.crm_id == made.crm_id
    assert rig.count("PATCH", f"/api/v2/activities/{made.crm_id}") == 1


def test_a_task_created_before_a_crash_is_found_by_its_marker_not_duplicated(rig: Rig) -> None:
    rig.connector.write(
        "activities",
        TICKET,
        [
            task("T-1"),
        ],
    )
    rig.connector.write("activities", TICKET, [task("T-2")])
    rig.sent.clear()
    after_crash = fresh_connector(rig)  # the ids never reached the sync store
    outcomes = [
        o for k in ("T-1", "T-2", "T-3") for o in after_crash.write("activities", TICKET, [task(k)])
    ]
    assert [o.created for o in outcomes] == [False, False, True]
    assert len(rig.sandbox.records("activities")) == 3
    # one person search, one list of that person's activities for all three, then the writes
    assert rig.count("GET", "/api/v2/persons/search") == 1
    assert rig.count("GET", "/api/v2/activities") == 1


def test_a_lost_answer_to_a_create_makes_the_retry_list_again(rig: Rig) -> None:
    def drop_the_create(request: httpx.Request) -> None:
        if request.method == "POST" and request.url.path == "/api/v1/notes":
            rig.sandbox.faults.set(Faults(drop_rate=1.0))

    rig.connector.write("deals", CONSULTATION, [deal()])
    rig.connector._client.event_hooks["request"].append(drop_the_create)
    with pytest.raises(TransientFailure):
        rig.connector.write("notes", CONSULTATION, [note()])  # created; the answer is lost
    rig.connector._client.event_hooks["request"].remove(drop_the_create)
    rig.sandbox.faults.set(Faults())
    [outcome] = rig.connector.write("notes", CONSULTATION, [note()])
    assert outcome.outcome == "accepted" and outcome.created is False
    assert len(rig.sandbox.records("notes")) == 1
    assert rig.count("GET", "/api/v1/notes") == 1


def test_a_note_links_deal_and_person_and_follows_the_status_with_put(rig: Rig) -> None:
    [made_deal] = rig.connector.write("deals", CONSULTATION, [deal()])
    [made] = rig.connector.write("notes", CONSULTATION, [note()])
    [updated] = rig.connector.write(
        "notes", CONSULTATION, [note(content="Consultation C-1: status paid")]
    )
    assert updated.crm_id == made.crm_id
    [stored] = rig.sandbox.flat_records("notes")
    assert stored["content"] == "Consultation C-1: status paid"
    assert stored[CONSULTATION] == "C-1" and stored["deal_id"] == int(made_deal.crm_id or 0)
    assert rig.count("PUT", f"/api/v1/notes/{made.crm_id}") == 1


def test_a_deal_carries_its_person_so_the_association_costs_no_call(rig: Rig) -> None:
    [made] = rig.connector.write("deals", CONSULTATION, [deal()])
    person_id = rig.persons()["P-0001"]["id"]
    assert rig.sandbox.records("deals")[0]["person_id"] == person_id
    before = len(rig.sent)
    [linked] = rig.connector.associate(
        "deals", "persons", [AssociationWrite("C-1", str(made.crm_id), str(person_id))]
    )
    assert linked.outcome == "accepted" and len(rig.sent) == before


def test_a_deal_whose_person_is_unknown_here_is_linked_by_the_association(rig: Rig) -> None:
    other = fresh_connector(rig)  # knows no person id: the body goes without person_id
    [made] = other.write("deals", CONSULTATION, [deal("C-2")])
    assert rig.sandbox.records("deals")[0].get("person_id") is None
    person_id = str(rig.persons()["P-0001"]["id"])
    [linked] = other.associate(
        "deals", "persons", [AssociationWrite("C-2", str(made.crm_id), person_id)]
    )
    assert linked.outcome == "accepted" and rig.sandbox.records("deals")[0]["person_id"] == int(
        person_id
    )
    assert rig.count("GET", "/api/v2/persons/search") == 0  # only the deal's own search


def test_searches_also_wait_for_their_own_budget(rig: Rig) -> None:
    searches = CountingGate()
    connector = PipedriveConnector(
        PipedriveConfig(base_url=BASE, api_token="pd-sandbox-api-token"),
        sandbox_client(rig.sandbox.app, base_url=BASE), search_gate=searches,
    )  # fmt: skip
    connector.write("persons", ID, [RecordWrite("P-0002", {"name": "Sam"})])
    connector.write("activities", TICKET, [task("T-9", person_id={ID: "P-0002"})])
    assert searches.turns == 1  # the person's search; not the field list, the create, the task
    assert searches.observed and searches.observed[0][0] == 200


def test_a_note_for_an_unfindable_deal_is_transient_and_sends_nothing(rig: Rig) -> None:
    connector = fresh_connector(rig)
    with pytest.raises(TransientFailure) as caught:
        connector.write("notes", CONSULTATION, [note("C-404")])
    assert caught.value.code == "LINK_NOT_FOUND"
    assert rig.sandbox.records("notes") == []
