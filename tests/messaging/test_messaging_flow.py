"""End to end: platform events → triggers → rules → SendGrid / Twilio sandboxes over HTTP →
signed callbacks into telecrm's API → message statuses, consent, profiles. SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import select

from telecrm.domain.clock import FrozenClock
from telecrm.messaging.tables import consent_ledger, messages
from telecrm.profiles.tables import profiles
from telecrm.sync.tables import disclosures
from tests.messaging.harness import messaging_harness
from tests.support.builders import event, registration

# 2026-03-02 17:00 UTC: 09:00 in Los Angeles, 12:00 in New York: inside the default window.
DAYTIME = datetime(2026, 3, 2, 17, 0, tzinfo=UTC)


def _consenting(patient_id: str, at: datetime, **prefs: object) -> dict:
    return registration(
        patient_id,
        at,
        data={"communication_preferences": {"sms_consent": True, "email_consent": True, **prefs}},
    )


def _rows(runtime, **where):  # type: ignore[no-untyped-def]
    query = select(messages)
    for key, value in where.items():
        query = query.where(getattr(messages.c, key) == value)
    with runtime.engine.connect() as conn:
        return list(conn.execute(query.order_by(messages.c.channel)))


def test_registration_sends_welcome_email_and_sms_and_engagement_comes_back(runtime, clock):
    clock.set(DAYTIME)
    with messaging_harness(runtime, clock) as h:
        h.feed([_consenting("p1", DAYTIME - timedelta(minutes=1))])
        plan, sent = h.run()
        assert (plan.planned, plan.queued, sent.sent) == (2, 2, 2)
        assert all(m["subject"] for m in h.sendgrid.messages)  # rendered subjects arrived
        assert len(h.twilio.messages) == 1
        rows = _rows(h.runtime, patient_key="p1")
        assert [(r.channel, r.template, r.status) for r in rows] == [
            ("email", "welcome", "sent"),
            ("sms", "welcome", "sent"),
        ]
        h.later(minutes=5)
        h.callbacks()
        rows = _rows(h.runtime, patient_key="p1")
        assert all(r.delivered_us or r.status in ("bounced", "undelivered", "failed") for r in rows)
        with h.runtime.engine.connect() as conn:
            n = (
                conn.execute(
                    select(disclosures.c.destination).where(disclosures.c.patient_key == "p1")
                )
                .scalars()
                .all()
            )
        assert sorted(n) == ["sendgrid", "twilio"]


def test_quiet_hours_defer_in_the_patients_timezone_and_send_when_the_window_opens(
    runtime, clock: FrozenClock
):
    night = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)  # 01:00 in Los Angeles
    clock.set(night)
    with messaging_harness(runtime, clock) as h:
        h.feed([_consenting("p1", night)])
        plan, sent = h.run()
        assert (plan.deferred, sent.sent) == (2, 0)
        row = _rows(h.runtime, channel="sms")[0]
        assert row.status == "queued" and row.deferred
        assert datetime.fromtimestamp(row.due_us / 1e6, UTC) == datetime(
            2026, 3, 2, 16, 0, tzinfo=UTC
        )
        h.clock.set(datetime(2026, 3, 2, 15, 59, tzinfo=UTC))
        assert h.send().sent == 0
        h.clock.set(datetime(2026, 3, 2, 16, 0, tzinfo=UTC))  # 08:00 local
        assert h.send().sent == 2


def test_no_sms_consent_suppresses_the_sms_with_the_reason_and_sends_the_email(runtime, clock):
    clock.set(DAYTIME)
    with messaging_harness(runtime, clock) as h:
        h.feed([registration("p1", DAYTIME)])  # no preferences: SMS needs prior express consent
        plan, sent = h.run()
        assert (plan.suppressed, sent.sent) == (1, 1)
        sms = _rows(h.runtime, channel="sms")[0]
        assert (sms.status, sms.reason) == ("suppressed", "no_consent")
        assert h.twilio.messages == []


def test_stop_is_honoured_at_once_and_start_restores_sms(runtime, clock):
    clock.set(DAYTIME)
    with messaging_harness(runtime, clock) as h:
        h.feed([_consenting("p1", DAYTIME)])
        h.run()
        h.twilio.inbound("+14155552671", "stop")
        with h.runtime.engine.connect() as conn:
            ledger = conn.execute(
                select(consent_ledger.c.source, consent_ledger.c.granted).where(
                    consent_ledger.c.channel == "sms"
                )
            ).all()
        assert ("sms_keyword", False) in ledger
        h.later(days=2)
        h.feed([event("consultation.submitted", "p1", h.clock.now(), {"consultation_id": "c1"})])
        h.run()
        sms = _rows(h.runtime, channel="sms", template="consultation_received")[0]
        assert (sms.status, sms.reason) == ("suppressed", "no_consent")
        h.twilio.inbound("+14155552671", "START")
        h.later(days=2)
        h.feed([event("refill.due", "p1", h.clock.now(),
                      {"prescription_id": "rx1", "due_on": "2026-03-10"})])  # fmt: skip
        h.run()
        refill = _rows(h.runtime, channel="sms", template="refill_reminder")[0]
        assert refill.status == "sent"
        h.runtime.worker().drain()
        with h.runtime.engine.connect() as conn:
            assert conn.execute(select(profiles.c.patient_key)).scalars().all() == ["p1"]


def test_the_same_event_twice_plans_one_message(runtime, clock):
    clock.set(DAYTIME)
    with messaging_harness(runtime, clock) as h:
        reg = _consenting("p1", DAYTIME)
        h.feed([reg])
        h.run()
        h.feed([reg])  # a platform retry: a duplicate event, no second trigger
        plan, sent = h.run()
        assert (plan.planned, sent.sent) == (0, 0)
        assert len(_rows(h.runtime)) == 2


def test_an_open_and_a_reply_reach_the_crm_through_the_profile(runtime, clock):
    from tests.sync.harness import hubspot_harness

    clock.set(DAYTIME)
    with messaging_harness(runtime, clock) as h:
        crm = hubspot_harness(h.runtime, clock)
        crm.provision()
        h.feed([_consenting("p1", DAYTIME - timedelta(minutes=1))])
        h.run()
        crm.sync()
        h.sendgrid.engage("p1@example.com", "open")
        h.twilio.inbound("+14155552671", "Thanks, got it")
        h.later(minutes=1)
        h.callbacks()
        report = crm.sync()
        assert report.written >= 1
        (contact,) = crm.records("contacts")
        assert contact["properties"]["telecrm_emails_opened"] == "1"
        assert contact["properties"]["telecrm_sms_replied"] == "1"


def test_a_channel_without_a_provider_waits_while_the_other_sends(runtime, clock):
    """`telecrm serve` with only Twilio configured: SMS go out, emails wait as not_configured
    (the round used to fail on the missing email provider and send nothing)."""
    from telecrm.messaging.wiring import build_messaging

    clock.set(DAYTIME)
    with messaging_harness(runtime, clock) as h:
        h.parts = build_messaging(runtime, email=None, sms=h.sms, from_settings=False)
        runtime.use_messaging(h.parts)
        h.feed([_consenting("p1", DAYTIME - timedelta(minutes=1))])
        plan, sent = h.run()
        assert (plan.planned, sent.sent) == (2, 1)
        rows = _rows(h.runtime, patient_key="p1")
        assert [(r.channel, r.status) for r in rows] == [("email", "queued"), ("sms", "sent")]
        assert h.sendgrid.messages == [] and len(h.twilio.messages) == 1


def test_a_text_twilio_refuses_still_counts_as_a_disclosure_with_its_refusal(runtime, clock):
    clock.set(DAYTIME)
    with messaging_harness(runtime, clock) as h:
        # The patient texted STOP to the number, and the webhook telling telecrm was lost:
        # telecrm still believes in the consent, so Twilio receives the message and refuses it.
        h.twilio._receive("+14155552671", "stop", None)
        h.feed([_consenting("p1", DAYTIME)])
        h.run()
        sms = _rows(h.runtime, channel="sms")[0]
        assert sms.status == "opted_out"
        with h.runtime.engine.connect() as conn:
            told = conn.execute(
                select(
                    disclosures.c.destination, disclosures.c.purpose, disclosures.c.fields
                ).where(disclosures.c.record_key == sms.message_id)
            ).all()
        assert [(d.destination, d.purpose.endswith("refused (opted_out)")) for d in told] == [
            ("twilio", True)
        ]
        assert "phone" in told[0].fields
