"""Minimal valid platform events, one per (type, version), and a builder for patient stories."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from telecrm.domain.events import Event, parse_event
from telecrm.domain.lifecycle import Thresholds, Transition
from telecrm.domain.profile import Profile, fold

NOW = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
PATIENT_ID = "pat_1"

_MESSAGE = {"message_id": "msg_1"}

# The least each event type needs to be valid: every required field, nothing optional.
MINIMAL_DATA: dict[tuple[str, int], dict[str, Any]] = {
    ("patient.registered", 1): {
        "first_name": "Ada",
        "last_name": "Lovelace",
        "email": "ada@example.com",
    },
    ("patient.updated", 1): {"first_name": "Ada"},
    ("patient.deleted", 1): {},
    ("session.tracked", 1): {},
    ("questionnaire.started", 1): {"questionnaire_id": "q_1"},
    ("consultation.submitted", 1): {"consultation_id": "c_1"},
    ("consultation.assigned", 1): {"consultation_id": "c_1", "provider_id": "dr_1"},
    ("consultation.accepted", 1): {"consultation_id": "c_1", "provider_id": "dr_1"},
    ("prescription.approved", 1): {"prescription_id": "rx_1", "medication": "Metformin"},
    ("treatment_plan.updated", 1): {"treatment_plan_id": "tp_1", "status": "created"},
    ("refill.due", 1): {"prescription_id": "rx_1", "due_on": "2026-03-10"},
    ("order.paid", 1): {"order_id": "ord_1", "amount": 49.0},
    ("subscription.started", 1): {"subscription_id": "sub_1", "tier": "basic", "amount": 29.0},
    ("subscription.renewed", 1): {"subscription_id": "sub_1"},
    ("subscription.renewal_approaching", 1): {
        "subscription_id": "sub_1",
        "renews_at": "2026-04-01T00:00:00+00:00",
    },
    ("subscription.cancelled", 1): {
        "subscription_id": "sub_1",
        "ends_at": "2026-04-01T00:00:00+00:00",
    },
    ("payment.failed", 1): {"reason": "card_declined"},
    ("support_ticket.created", 1): {"ticket_id": "t_1", "category": "billing"},
    ("referral.made", 1): {"referral_id": "ref_1"},
    ("review.posted", 1): {"review_id": "rev_1", "rating": 5},
    ("journey.milestone", 1): {"journey": "lead_nurturing", "milestone": "nurtured"},
    ("journey.case_opened", 1): {
        "journey": "refill_reminder_campaign",
        "case_id": "je_1",
        "kind": "task",
        "subject": "Call the patient about their refill",
    },
    ("journey.fields_set", 1): {"journey": "lead_nurturing", "fields": {"nurture_status": "ok"}},
    ("analytics.scored", 1): {"lead_score": 42.5, "engagement_score": 61.0, "model": "scores-v1"},
    **{
        (f"email.{kind}", 1): _MESSAGE
        for kind in ("delivered", "opened", "clicked", "bounced", "unsubscribed")
    },
    **{
        (f"sms.{kind}", 1): _MESSAGE
        for kind in ("delivered", "failed", "replied", "opted_out", "opted_in")
    },
}


def wire(
    type_: str,
    *,
    data: dict[str, Any] | None = None,
    at: datetime = NOW,
    event_id: str | None = None,
    patient: dict[str, str] | None = None,
    version: int = 1,
) -> dict[str, Any]:
    """A wire event as a platform would post it: the minimal data unless `data` is given."""
    return {
        "id": event_id or f"{type_}:{at.strftime('%Y%m%dT%H%M%S.%f')}",
        "type": type_,
        "version": version,
        "occurred_at": at.isoformat(),
        "patient": {"id": PATIENT_ID} if patient is None else patient,
        "data": dict(MINIMAL_DATA[(type_, version)]) if data is None else data,
    }


def event(type_: str, at: datetime = NOW, **data: Any) -> Event:
    """A parsed event: the minimal data for its type with `data` laid over it."""
    merged = {**MINIMAL_DATA[(type_, 1)], **data}
    return parse_event(wire(type_, data=merged, at=at), now=at)


class Story:
    """One patient's events told in order on a moving clock, then folded."""

    def __init__(self, start: datetime) -> None:
        self.at = start
        self.events: list[Event] = []

    def then(self, type_: str, **data: Any) -> Story:
        self.events.append(event(type_, self.at, **data))
        return self

    def after(self, **delta: float) -> Story:
        self.at += timedelta(**delta)
        return self

    def fold(
        self, now: datetime | None = None, thresholds: Thresholds | None = None
    ) -> tuple[Profile, list[Transition]]:
        return fold(PATIENT_ID, self.events, now or self.at, thresholds or Thresholds())
