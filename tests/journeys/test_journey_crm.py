"""crm_update, crm_task and crm_case steps reach the CRM through the sync outbox: the runner
writes a journey event in its transaction, the projection folds it into the profile, and the
mapping carries it (HubSpot here, over HTTP to its sandbox). SQLite and PostgreSQL."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import select

from telecrm.bootstrap import Runtime, bootstrap
from telecrm.domain.clock import FrozenClock
from telecrm.ingest.tables import events
from telecrm.sync.agreement import flatten
from telecrm.sync.mapping import BUILTIN_DIR, load_mapping
from tests.journeys.helpers import DAYTIME, consenting, instances, tick
from tests.support.builders import event
from tests.sync.harness import hubspot_harness

JOURNEY = """version: 1
name: probe_crm
entry: {event: questionnaire.started}
steps:
  - {id: mark, crm_update: {set: {nurture_status: nurturing}}}
  - {id: case, crm_case: {subject: Call back about the questionnaire, priority: high}}
  - {id: task, crm_task: {subject: Check in next week, priority: low, due_in: 7d}}
"""


def _mapping(tmp_path: Path) -> Path:
    """The built-in HubSpot mapping plus a contact property fed by the journey's crm_update."""
    text = (BUILTIN_DIR / "hubspot.yaml").read_text()
    text = text.replace(
        "custom_properties:",
        "custom_properties:\n"
        "  - {crm_object: contacts, name: telecrm_nurture_status, label: Nurture status, "
        "kind: string}",
        1,
    )
    text = text.replace(
        "      telecrm_churn_risk: {from: churn_risk}",
        "      telecrm_churn_risk: {from: churn_risk}\n"
        "      telecrm_nurture_status: {from: journey.nurture_status}",
        1,
    )
    path = tmp_path / "hubspot-journeys.yaml"
    path.write_text(text)
    return path


def test_crm_steps_become_a_contact_field_a_case_and_a_task_in_hubspot(
    runtime: Runtime, clock: FrozenClock, tmp_path: Path
) -> None:
    clock.set(DAYTIME)
    folder = tmp_path / "journeys"
    folder.mkdir()
    (folder / "probe_crm.yaml").write_text(JOURNEY)
    rt = bootstrap(
        runtime.settings.model_copy(update={"journeys_dir": folder}),
        clock=clock,
        engine=runtime.engine,
        migrate=False,
    )
    hub = hubspot_harness(rt, clock, load_mapping(str(_mapping(tmp_path))))
    hub.provision()
    hub.feed([consenting("p1", DAYTIME), event("questionnaire.started", "p1", DAYTIME,
                                               {"questionnaire_id": "q1"})])  # fmt: skip
    tick(rt, clock)
    tick(rt, clock)  # the journey's own events are folded into the profile
    (inst,) = instances(rt, "probe_crm")
    assert inst.state == "completed"
    with rt.engine.connect() as conn:
        kinds = sorted(
            conn.execute(select(events.c.type).where(events.c.source == "journey")).scalars()
        )
    assert kinds == ["journey.case_opened", "journey.case_opened", "journey.fields_set"]

    report = hub.sync()
    assert report.rejected == 0
    agreement = hub.agreement()
    assert agreement.ok, agreement.summary()
    (contact,) = [flatten("hubspot", r) for r in hub.records("contacts")]
    assert contact["telecrm_nurture_status"] == "nurturing"
    tickets = sorted(
        (t["subject"], t["hs_ticket_priority"])
        for t in (flatten("hubspot", r) for r in hub.records("tickets"))
    )
    assert tickets == [
        ("Call back about the questionnaire (probe_crm)", "HIGH"),
        ("Task: Check in next week (probe_crm)", "LOW"),
    ]
    # Nothing changed since: the next round costs no call.
    tick(rt, clock)
    assert hub.sync().calls == 0


def test_a_placeholder_in_a_crm_subject_is_refused() -> None:
    import pytest

    from telecrm.journeys.definition import JourneyError
    from telecrm.journeys.validate import check_text

    text = JOURNEY.replace("Call back about the questionnaire", '"Call {first_name}"')
    with pytest.raises(JourneyError, match=r"steps\.1\.crm_case\.subject"):
        check_text(text, "probe.yaml", set())
