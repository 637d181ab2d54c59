"""The patient profile projection: catalog fields plus the lifecycle facts, folded from events.

`fold` is the whole projection: events in `(occurred_at, sequence)` order plus time produce one
profile and its stage history. Incremental processing and `telecrm lifecycle rebuild` both call
it, which is why a rebuild reproduces what the live worker wrote.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from dataclasses import fields as dataclass_fields
from datetime import datetime
from typing import Any

from telecrm.domain import events as ev
from telecrm.domain.fields import FIELDS
from telecrm.domain.lifecycle import (
    RANK,
    Stage,
    Thresholds,
    Transition,
    evaluate,
    next_time_change,
)

# Patient-initiated events: they count as activity for inactivity thresholds.
ACTIVITY_TYPES = frozenset(
    {
        "session.tracked",
        "patient.registered",
        "patient.updated",
        "questionnaire.started",
        "consultation.submitted",
        "order.paid",
        "subscription.started",
        "subscription.renewed",
        "support_ticket.created",
        "referral.made",
        "review.posted",
        "email.opened",
        "email.clicked",
        "sms.replied",
    }
)
PURCHASE_TYPES = frozenset({"order.paid", "subscription.started", "subscription.renewed"})

# Event types whose fold reads or writes no encrypted field but the ones named: the projection
# folds a batch of only these without decrypting the rest of the profile (its fast path for score
# and engagement events, profiles/worker.py). tests/domain/test_sealed_reads.py folds each one
# over a profile holding every encrypted field and checks it.
SEALED_READS: dict[str, frozenset[str]] = {
    "analytics.scored": frozenset({"adherence_pdc"}),
    "journey.fields_set": frozenset(),
    **{
        f"email.{kind}": frozenset()
        for kind in ("delivered", "opened", "clicked", "bounced", "unsubscribed")
    },
    **{
        f"sms.{kind}": frozenset()
        for kind in ("delivered", "failed", "replied", "opted_out", "opted_in")
    },
}


@dataclass(slots=True)
class Facts:
    """What the lifecycle rules read. Timestamps and counters only: no PHI values."""

    sessions: int = 0
    registered_at: datetime | None = None
    questionnaire_at: datetime | None = None
    consultation_at: datetime | None = None
    treatment_at: datetime | None = None
    first_order_at: datetime | None = None
    last_purchase_at: datetime | None = None
    last_activity_at: datetime | None = None
    subscription_status: str | None = None  # "active" | "cancelled"
    subscription_ends_at: datetime | None = None
    referrals: int = 0
    reviews: int = 0
    churn_risk: float | None = None
    churned_at: datetime | None = None
    # The last `analytics.scored` (adherence is PHI: it lives sealed in `values`).
    lead_score: float | None = None
    engagement_score: float | None = None
    predicted_ltv: float | None = None
    scored_at: datetime | None = None

    def to_json(self) -> dict[str, Any]:
        """Only what differs from the defaults, datetimes as ISO text (hot path: no asdict)."""
        out: dict[str, Any] = {}
        for name, default in _FACT_DEFAULTS:
            value = getattr(self, name)
            if value != default or type(value) is not type(default):
                out[name] = value.isoformat() if isinstance(value, datetime) else value
        return out

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> Facts:
        facts = cls()
        for key, value in raw.items():
            if key.endswith("_at") and isinstance(value, str):
                value = datetime.fromisoformat(value)
            setattr(facts, key, value)
        return facts


_FACT_DEFAULTS: tuple[tuple[str, Any], ...] = tuple(
    (f.name, f.default) for f in dataclass_fields(Facts)
)


@dataclass(slots=True)
class Profile:
    patient_key: str
    values: dict[str, Any] = field(default_factory=dict)  # catalog field -> value
    facts: Facts = field(default_factory=Facts)
    stage: Stage | None = None
    stage_since: datetime | None = None
    max_rank: int = -1
    as_of: datetime | None = None  # the last instant the rules were evaluated at
    last_event_at: datetime | None = None
    deleted: bool = False
    events_applied: int = 0
    # The platform's business records a CRM shows as deals, tickets and custom tables, by kind
    # then id: statuses, amounts and timestamps only. Stored unencrypted, so never a medication,
    # condition, treatment status or provider: the catalog's PHI values live in `values`.
    records: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)

    def set(self, name: str, value: Any) -> None:
        if name not in FIELDS:  # the catalog is the only vocabulary
            raise KeyError(f"{name} is not in the field catalog")
        if value is None:
            return
        self.values[name] = value

    def bump(self, name: str, by: int | float = 1) -> None:
        self.set(name, self.values.get(name, 0) + by)


def _details(p: Profile, d: ev._PatientDetails) -> None:
    for name in (
        "first_name",
        "last_name",
        "email",
        "phone",
        "sex",
        "language",
        "timezone",
        "billing_cycle",
        "paperless_billing",
        "provider_preference",
    ):
        p.set(name, getattr(d, name))
    if d.date_of_birth is not None:
        p.set("date_of_birth", d.date_of_birth.isoformat())
    if d.address is not None:
        p.set("address_line1", d.address.line1)
        p.set("city", d.address.city)
        p.set("state", d.address.state)
        p.set("postal_code", d.address.postal_code)
    if d.emergency_contact is not None:
        p.set("emergency_contact_name", d.emergency_contact.name)
        p.set("emergency_contact_phone", d.emergency_contact.phone)
        p.set("emergency_contact_relation", d.emergency_contact.relation)
    if d.communication_preferences is not None:
        for name, value in d.communication_preferences.model_dump(exclude_none=True).items():
            p.set(name, value)
    if d.insurance is not None:
        p.set("insurance_provider", d.insurance.provider)
        p.set("insurance_member_id", d.insurance.member_id)
    for name in ("conditions", "medications", "allergies"):
        value = getattr(d, name)
        if value is not None:
            p.set(name, list(value))


def _record(p: Profile, kind: str, record_id: str) -> dict[str, Any]:
    return p.records.setdefault(kind, {}).setdefault(record_id, {})


def _close_open_consultation(p: Profile, amount: float, at: datetime) -> None:
    """A one-off order is what the latest open consultation sold: it moves the amount and closes it."""
    open_ones = [
        (c.get("submitted_at") or "", cid)
        for cid, c in p.records.get("consultation", {}).items()
        if c.get("status") != "paid"
    ]
    if open_ones:
        c = p.records["consultation"][max(open_ones)[1]]
        c.update(status="paid", amount=amount, closed_at=at.isoformat())


def _treatment_plan_updated(p: Profile, plan_id: str, at: datetime) -> None:
    """Timestamps only; `current` marks the plan the catalog's treatment_* values describe (the
    values hold the latest update, and only that plan's CRM record may show them)."""
    plans = p.records.setdefault("treatment_plan", {})
    for plan in plans.values():
        plan.pop("current", None)
    plan = plans.setdefault(plan_id, {})
    plan.setdefault("created_at", at.isoformat())
    plan.update(updated_at=at.isoformat(), current=True)


def _merge_list(p: Profile, name: str, items: Iterable[Any]) -> None:
    current = list(p.values.get(name, []))
    for item in items:
        if item not in current:
            current.append(item)
    if current:
        p.set(name, current)


def apply_event(p: Profile, e: ev.Event) -> None:
    """Fold one event's facts and field values into the profile (no stage logic here)."""
    f, d, at = p.facts, e.data, e.occurred_at
    p.events_applied += 1
    p.last_event_at = at if p.last_event_at is None else max(p.last_event_at, at)
    if p.deleted and e.type != "patient.registered":
        # Erased: a late event must not write values back, nor move facts under a frozen stage.
        return
    if e.type in ACTIVITY_TYPES:
        f.last_activity_at = at if f.last_activity_at is None else max(f.last_activity_at, at)
    if e.type in PURCHASE_TYPES:
        f.last_purchase_at = at if f.last_purchase_at is None else max(f.last_purchase_at, at)
    match d:
        case ev.PatientRegistered():
            p.deleted = False
            f.registered_at = f.registered_at or at
            _details(p, d)
            p.set("acquisition_channel", d.acquisition_channel)
        case ev.PatientUpdated():
            _details(p, d)
        case ev.PatientDeleted():
            # Erasure: identifying values go; counters stay for aggregate reporting.
            p.values = {k: v for k, v in p.values.items() if not FIELDS[k].encrypted}
            p.deleted = True
        case ev.SessionTracked():
            f.sessions += 1
            p.bump("sessions_count")
            p.set("last_session_at", at.isoformat())
            if d.channel and "acquisition_channel" not in p.values:
                p.set("acquisition_channel", d.channel)
            if d.feature:
                _merge_list(p, "features_used", [d.feature])
        case ev.QuestionnaireStarted():
            f.questionnaire_at = f.questionnaire_at or at
        case ev.ConsultationSubmitted():
            f.consultation_at = f.consultation_at or at
            p.bump("consultations_count")
            p.set("last_consultation_at", at.isoformat())
            if d.symptoms:
                p.set("symptoms", [s.model_dump() for s in d.symptoms])
            _merge_list(p, "conditions", d.conditions)
            _merge_list(p, "medications", d.medications)
            _merge_list(p, "allergies", d.allergies)
            c = _record(p, "consultation", d.consultation_id)
            c.setdefault("status", "submitted")
            c.setdefault("submitted_at", at.isoformat())
        case ev.ConsultationAssigned():
            p.set("provider_id", d.provider_id)
            c = _record(p, "consultation", d.consultation_id)
            if c.get("status") in (None, "submitted"):
                c["status"] = "assigned"
        case ev.ConsultationAccepted():
            p.set("provider_id", d.provider_id)
            p.bump("consultations_accepted")
            c = _record(p, "consultation", d.consultation_id)
            if c.get("status") in (None, "submitted", "assigned"):
                c["status"] = "accepted"
        case ev.PrescriptionApproved():
            f.treatment_at = f.treatment_at or at
            if d.consultation_id is not None:
                c = _record(p, "consultation", d.consultation_id)
                if c.get("status") != "paid":
                    c["status"] = "prescribed"
            _merge_list(p, "medications", [d.medication])
            rx = _record(p, "prescription", d.prescription_id)
            rx.update(
                status="approved",
                prescribed_at=at.isoformat(),
                days_supply=d.days_supply,
                refills=d.refills,
            )
            if d.consultation_id is not None:
                rx["consultation_id"] = d.consultation_id
        case ev.RefillDue():
            _record(p, "prescription", d.prescription_id)["refill_due_on"] = d.due_on.isoformat()
        case ev.TreatmentPlanUpdated():
            if d.status in ("created", "updated"):
                f.treatment_at = f.treatment_at or at
            p.set("treatment_status", d.status)
            p.set("treatment_outcome", d.outcome)
            p.set("treatment_progress", d.progress)
            _treatment_plan_updated(p, d.treatment_plan_id, at)
        case ev.OrderPaid():
            f.first_order_at = f.first_order_at or at
            p.bump("orders_count")
            p.set("total_order_value", round(p.values.get("total_order_value", 0.0) + d.amount, 2))
            p.values.setdefault("first_order_at", at.isoformat())
            p.set("last_order_at", at.isoformat())
            if not d.recurring:
                _close_open_consultation(p, d.amount, at)
            if d.payment_method is not None:
                p.set("payment_method_brand", d.payment_method.brand)
                p.set("payment_method_last4", d.payment_method.last4)
        case ev.SubscriptionStarted():
            f.subscription_status = "active"
            f.subscription_ends_at = None
            p.set("subscription_tier", d.tier)
            p.set("subscription_status", "active")
            p.set("subscription_started_at", at.isoformat())
            p.values.pop("subscription_ends_at", None)
            s = _record(p, "subscription", d.subscription_id)
            s.update(
                tier=d.tier,
                interval=d.interval,
                amount=float(d.amount),
                status="active",
                started_at=at.isoformat(),
            )
            s.pop("ends_at", None)
        case ev.SubscriptionRenewed():
            f.subscription_status = "active"
            f.subscription_ends_at = None
            p.set("subscription_status", "active")
            p.values.pop("subscription_ends_at", None)
            s = _record(p, "subscription", d.subscription_id)
            s.update(status="active", renewed_at=at.isoformat())
            if d.amount is not None:
                s["amount"] = float(d.amount)
            s.pop("ends_at", None)
        case ev.SubscriptionCancelled():
            f.subscription_status = "cancelled"
            f.subscription_ends_at = max(d.ends_at, at)
            p.set("subscription_status", "cancelled")
            p.set("subscription_ends_at", f.subscription_ends_at.isoformat())
            _record(p, "subscription", d.subscription_id).update(
                status="cancelled", ends_at=f.subscription_ends_at.isoformat()
            )
        case ev.PaymentFailed():
            p.bump("payments_failed_count")
        case ev.SupportTicketCreated():
            p.bump("support_tickets_count")
            p.set("last_support_ticket_at", at.isoformat())
            _record(p, "support_ticket", d.ticket_id).update(
                category=d.category, priority=d.priority, created_at=at.isoformat()
            )
        case ev.ReferralMade():
            f.referrals += 1
        case ev.ReviewPosted():
            f.reviews += 1
        case ev.JourneyCaseOpened():
            # A journey's task or case for a care coordinator: the sync makes it a CRM case or
            # activity. Not activity of the patient's: it moves no stage.
            _record(p, f"care_{d.kind}", d.case_id).update(
                journey=d.journey,
                subject=d.subject,
                priority=d.priority,
                created_at=at.isoformat(),
                due_at=(d.due_at or at).isoformat(),
            )
        case ev.AnalyticsScored():
            f.lead_score, f.engagement_score = d.lead_score, d.engagement_score
            f.churn_risk, f.predicted_ltv, f.scored_at = d.churn_risk, d.predicted_ltv, at
            if d.adherence_pdc is None:
                p.values.pop("adherence_pdc", None)
            else:
                p.set("adherence_pdc", d.adherence_pdc)
        case ev.JourneyFieldsSet():
            fields = p.records.setdefault("journey_field", {})
            for name, value in d.fields.items():
                fields[name] = {"value": value, "journey": d.journey, "at": at.isoformat()}
        case ev.MessageEngagement():
            counter = {
                "email.delivered": "emails_delivered",
                "email.opened": "emails_opened",
                "email.clicked": "emails_clicked",
                "email.bounced": "emails_bounced",
                "sms.delivered": "sms_delivered",
                "sms.failed": "sms_failed",
                "sms.replied": "sms_replied",
            }.get(e.type)
            if counter:
                p.bump(counter)
            if e.type == "email.unsubscribed":
                p.set("marketing_consent", False)
            if e.type == "sms.opted_out":
                p.set("sms_consent", False)
            if e.type == "sms.opted_in":  # START after STOP: the number takes texts again
                p.set("sms_consent", True)
        case _:
            pass  # subscription.renewal_approaching: a trigger, no profile change


def _move(
    p: Profile, at: datetime, t: Thresholds, history: list[Transition], event_id: str | None
) -> None:
    new, reason = evaluate(p, at, t)
    p.as_of = at if p.as_of is None else max(p.as_of, at)
    if new is None or new == p.stage:
        return
    history.append(
        Transition(at=at, from_stage=p.stage, to_stage=new, reason=reason, event_id=event_id)
    )
    if new is Stage.CHURNED:
        p.facts.churned_at = at
    p.stage, p.stage_since = new, at
    if new in RANK:
        p.max_rank = max(p.max_rank, RANK[new])


def advance_time(p: Profile, until: datetime, t: Thresholds, history: list[Transition]) -> None:
    """Apply every clock-driven transition due up to `until`, each at its own instant."""
    after = p.as_of
    while after is not None:
        due = next_time_change(p, after, t)
        if due is None or due > until:
            return
        _move(p, due, t, history, None)
        after = due


def step(p: Profile, e: ev.Event, t: Thresholds, history: list[Transition]) -> None:
    """One event: first the clock catches up to it, then the event applies."""
    advance_time(p, e.occurred_at, t, history)
    apply_event(p, e)
    _move(p, e.occurred_at, t, history, e.id)


def fold(
    patient_key: str, ordered: Iterable[ev.Event], now: datetime, t: Thresholds
) -> tuple[Profile, list[Transition]]:
    """The whole projection: events (in occurred_at, sequence order) and the clock."""
    p = Profile(patient_key)
    history: list[Transition] = []
    for e in ordered:
        step(p, e, t, history)
    advance_time(p, now, t, history)
    return p, history
