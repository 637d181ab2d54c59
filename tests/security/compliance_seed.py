"""A patient whose data really left telecrm: through the real intake and projection, a sync to a
Dynamics 365 sandbox under a BAA, and an SMS naming a medication sent through Twilio's sandbox
under a BAA (plus the welcome email through SendGrid's). Canary values mark the PHI."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from telecrm.bootstrap import Runtime
from telecrm.domain.clock import FrozenClock
from tests.messaging.harness import MessagingHarness, messaging_harness
from tests.support.builders import (
    CANARY_CONDITION,
    CANARY_EMAIL,
    CANARY_MEDICATION,
    event,
    registration,
)
from tests.sync.harness import SyncHarness, dynamics_harness

PID = "pat_rights_1"
SEEDED_AT = datetime(2026, 3, 2, 17, 0, tzinfo=UTC)  # 09:00 in Los Angeles: outside quiet hours
CANARY_ALLERGY = "Canaryallergen pollen"
CANARY_INSURER = "Canary Mutual Health"
CANARY_OUTCOME = "Canaryoutcome steady"
CANARY_PROVIDER = "prov_canary_51c0"
CANARIES = (
    CANARY_CONDITION,
    CANARY_MEDICATION,
    CANARY_ALLERGY,
    CANARY_INSURER,
    CANARY_OUTCOME,
    CANARY_EMAIL,
)
# The refill reminder, overridden to name the medication: only allowed under Twilio's BAA.
REFILL_SMS = (
    "{{ brand.name }}: time to refill {{ patient.medications | join(', ') }}. "
    "{{ links.refill }} Reply STOP to opt out.\n"
)


def patient_events(pid: str, at: datetime) -> list[dict[str, Any]]:
    s = timedelta(seconds=1)
    return [
        registration(
            pid,
            at,
            data={
                "email": CANARY_EMAIL,
                "conditions": [CANARY_CONDITION],
                "medications": [CANARY_MEDICATION],
                "allergies": [CANARY_ALLERGY],
                "insurance": {"provider": CANARY_INSURER, "member_id": "CAN-77"},
                "communication_preferences": {"sms_consent": True, "email_consent": True},
            },
        ),
        event("consultation.submitted", pid, at + s, {"consultation_id": "c_rights"}),
        event(
            "consultation.assigned",
            pid,
            at + s,
            {"consultation_id": "c_rights", "provider_id": CANARY_PROVIDER},
        ),
        event(
            "prescription.approved",
            pid,
            at + 2 * s,
            {"prescription_id": "rx_rights", "medication": CANARY_MEDICATION},
        ),
        event("order.paid", pid, at + 3 * s, {"order_id": "o_rights", "amount": 49.0}),
        event(
            "treatment_plan.updated",
            pid,
            at + 4 * s,
            {"treatment_plan_id": "tp_rights", "status": "created", "outcome": CANARY_OUTCOME},
        ),
    ]


def refill_due(pid: str, at: datetime) -> dict[str, Any]:
    return event("refill.due", pid, at, {"prescription_id": "rx_rights", "due_on": "2026-03-09"})


@dataclass
class Seeded:
    runtime: Runtime  # wired to the CRM sandbox and the messaging sandboxes
    clock: FrozenClock
    messaging: MessagingHarness
    crm: SyncHarness


@contextmanager
def seeded_patient(runtime: Runtime, clock: FrozenClock, tmp_path: Path) -> Iterator[Seeded]:
    templates = tmp_path / "templates"
    (templates / "sms").mkdir(parents=True)
    (templates / "sms" / "refill_reminder.en.j2").write_text(REFILL_SMS)
    clock.set(SEEDED_AT)
    with messaging_harness(
        runtime, clock, settings={"twilio_baa": True, "templates_dir": templates}
    ) as h:
        crm = dynamics_harness(h.runtime, clock, "dynamics-baa")
        crm.provision()
        h.feed(patient_events(PID, SEEDED_AT))
        report = crm.sync()
        assert report.calls, report
        clock.advance(timedelta(minutes=1))
        _plan, sent = h.run()
        assert sent.sent >= 2, sent
        clock.advance(timedelta(minutes=1))
        h.callbacks()  # delivery receipts: statuses and engagement events come back
        # The next day (today's SMS cap is spent): the refill reminder naming the medication.
        clock.advance(timedelta(days=1))
        h.feed([refill_due(PID, clock.now())])
        crm.sync()
        _plan, sent = h.run()
        assert sent.sent >= 1, sent
        h.callbacks()
        yield Seeded(h.runtime, clock, h, crm)
