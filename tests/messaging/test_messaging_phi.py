"""PHI discipline in messaging: canary health values never reach SendGrid (no BAA, ever), nor
Twilio without a BAA, nor a log line, nor a message row; with a BAA they reach Twilio only through
a template that names them, and each such send is recorded as a PHI disclosure."""

from __future__ import annotations

import io
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import select

from telecrm.messaging.content_guard import phi_leaks
from telecrm.messaging.tables import messages
from telecrm.messaging.templates import TemplateCatalog, TemplateRefused
from telecrm.observability.logs import configure_logging
from telecrm.store.schema import metadata
from telecrm.sync.tables import disclosures
from tests.messaging.harness import messaging_harness
from tests.support.builders import CANARY_CONDITION, CANARY_MEDICATION, event, registration

DAYTIME = datetime(2026, 3, 2, 17, 0, tzinfo=UTC)
CANARY_ALLERGY = "Canaryallergen dust"
CANARY_INSURER = "Canary Mutual Health"
CANARY_OUTCOME = "Canaryoutcome improving"
CANARIES = (CANARY_CONDITION, CANARY_MEDICATION, CANARY_ALLERGY, CANARY_INSURER, CANARY_OUTCOME)


def _every_trigger(pid: str, at: datetime) -> list[dict]:
    """A patient with canary health values, and all 8 triggers."""
    reg = registration(
        pid,
        at,
        data={
            "conditions": [CANARY_CONDITION],
            "medications": [CANARY_MEDICATION],
            "allergies": [CANARY_ALLERGY],
            "insurance": {"provider": CANARY_INSURER, "member_id": "CAN-123"},
            "communication_preferences": {"sms_consent": True, "marketing_consent": True},
        },
    )
    s = timedelta(seconds=1)
    return [
        reg,
        event(
            "consultation.submitted",
            pid,
            at + s,
            {
                "consultation_id": "c1",
                "conditions": [CANARY_CONDITION],
                "medications": [CANARY_MEDICATION],
            },
        ),
        event(
            "prescription.approved",
            pid,
            at + 2 * s,
            {"prescription_id": "rx1", "medication": CANARY_MEDICATION},
        ),
        event("order.paid", pid, at + 3 * s, {"order_id": "o1", "amount": 49.0}),
        event("refill.due", pid, at + 4 * s, {"prescription_id": "rx1", "due_on": "2026-03-09"}),
        event(
            "subscription.renewal_approaching",
            pid,
            at + 5 * s,
            {"subscription_id": "s1", "renews_at": "2026-03-09T00:00:00+00:00"},
        ),
        event(
            "support_ticket.created", pid, at + 6 * s, {"ticket_id": "t1", "category": "billing"}
        ),
        event(
            "treatment_plan.updated",
            pid,
            at + 7 * s,
            {"treatment_plan_id": "tp1", "status": "created", "outcome": CANARY_OUTCOME},
        ),
    ]


def test_no_health_value_reaches_sendgrid_or_twilio_without_a_baa_nor_a_log(runtime, clock):
    clock.set(DAYTIME)
    stream = io.StringIO()
    configure_logging("DEBUG", stream=stream)
    try:
        with messaging_harness(runtime, clock) as h:
            h.feed(_every_trigger("pat_canary", DAYTIME))
            plan, sent = h.run()
            h.later(minutes=2)
            h.callbacks()
            assert plan.triggers == 8
            assert sent.sent >= 8, (plan, sent)
            assert h.sent_bytes["sendgrid"] and h.sent_bytes["twilio"]
            with h.runtime.engine.connect() as conn:
                templates = set(conn.execute(select(messages.c.template)).scalars())
                stored = [
                    str(value)
                    for table in metadata.sorted_tables
                    if table.name != "events"  # the event log holds them, encrypted
                    for row in conn.execute(select(table))
                    for value in row
                ]
    finally:
        configure_logging("WARNING")
    assert {
        "welcome",
        "consultation_received",
        "treatment_plan_ready",
        "order_confirmation",
        "refill_reminder",
        "subscription_renewal",
        "support_ticket_received",
    } <= templates
    for canary in CANARIES:
        low = canary.lower().encode()
        assert not any(low in b.lower() for b in h.sent_bytes["sendgrid"]), canary
        assert not any(low in b.lower() for b in h.sent_bytes["twilio"]), canary
        assert canary.lower() not in stream.getvalue().lower(), canary
        assert not any(canary.lower() in v.lower() for v in stored), canary


def test_with_a_baa_phi_reaches_twilio_only_through_a_template_that_names_it(
    runtime, clock, tmp_path: Path
):
    (tmp_path / "sms").mkdir()
    (tmp_path / "sms" / "refill_reminder.en.j2").write_text(
        "{{ brand.name }}: time to refill {{ patient.medications | join(', ') }}. "
        "{{ links.refill }} Reply STOP to opt out.\n"
    )
    clock.set(DAYTIME)
    with messaging_harness(
        runtime, clock, settings={"twilio_baa": True, "templates_dir": tmp_path}
    ) as h:
        h.feed(_every_trigger("pat_canary", DAYTIME))
        h.run()
        sms_bytes = b"".join(h.sent_bytes["twilio"]).decode("utf-8", "replace")
        assert "Canarymycin" in sms_bytes.replace("+", " ")
        assert not any(
            CANARY_MEDICATION.lower().encode() in b.lower() for b in h.sent_bytes["sendgrid"]
        )
        with h.runtime.engine.connect() as conn:
            rows = conn.execute(
                select(disclosures.c.destination, disclosures.c.fields, disclosures.c.phi).where(
                    disclosures.c.record_key.in_(
                        select(messages.c.message_id).where(
                            messages.c.template == "refill_reminder"
                        )
                    )
                )
            ).all()
        by_dest = {d: (f, phi) for d, f, phi in rows}
        assert by_dest["twilio"][1] is True and "medications" in by_dest["twilio"][0]
        assert by_dest["sendgrid"][1] is False


def test_a_template_naming_phi_for_a_channel_without_baa_never_loads(tmp_path: Path) -> None:
    (tmp_path / "sms").mkdir()
    (tmp_path / "sms" / "refill_reminder.en.j2").write_text(
        "{{ brand.name }}:\ntime to refill {{ patient.medications }}\n"
    )
    with pytest.raises(TemplateRefused) as refused:
        TemplateCatalog.load(sms_baa=False, override_dir=tmp_path)
    message = str(refused.value)
    assert "refill_reminder" in message and "line 2" in message and "medications" in message


def test_the_send_time_guard_catches_a_phi_value_in_rendered_content() -> None:
    values = {"medications": [CANARY_MEDICATION], "first_name": "Ada"}
    assert phi_leaks(values, ["Your refill of canarymycin is ready"])
    assert not phi_leaks(values, ["Hi Ada, your refill is ready"])
    assert not phi_leaks({"first_name": "Ada"}, ["Ada"])  # a name is not PHI


def test_a_sendgrid_hosted_template_receives_only_what_our_template_uses(
    runtime, clock, tmp_path: Path
) -> None:
    from telecrm.messaging.config import BUILTIN

    hosted = "d-" + "ab" * 16
    config = tmp_path / "messaging.yaml"
    config.write_text(BUILTIN.read_text() + f"\nsendgrid_templates:\n  welcome: {hosted}\n")
    clock.set(DAYTIME)
    with messaging_harness(runtime, clock, settings={"messaging_config": config}) as h:
        h.sendgrid.add_template(
            hosted,
            subject="Welcome, {{patient.first_name}}",
            html="<p>{{links.portal}}</p>",
            text="{{brand.name}}",
        )
        h.feed(_every_trigger("pat_canary", DAYTIME))
        h.run()
        welcome = next(m for m in h.sendgrid.messages if m["categories"] == ["welcome"])
        assert welcome["subject"] == "Welcome, Ada"
        bodies = [b for b in h.sent_bytes["sendgrid"] if hosted.encode() in b]
        assert len(bodies) == 1
        body = json.loads(bodies[0].split(b"\n", 1)[1])
        (data,) = [p["dynamic_template_data"] for p in body["personalizations"]]
        used = h.parts.catalog.references("welcome", "email")
        assert {f"{ns}.{k}" for ns, values in data.items() for k in values} <= used
        assert data["patient"] == {"first_name": "Ada"}
        for canary in CANARIES:
            assert canary.lower().encode() not in bodies[0].lower()
